package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/adclick/adclick/pkg/admin"
	"github.com/adclick/adclick/pkg/flagenv"
)

const adminUsage = `adclick admin: see and change the cluster (through etcd)

Usage:
  adclick admin status [--json]                  every node, the ring's eras, load and liveness
  adclick admin owner AD [--at TIME] [--json]    which aggregator owns AD for the minute of TIME (default now)
  adclick admin drain NODE [--wait] [--json]     take an aggregator off the ring from a future minute; --wait until drained
  adclick admin remove NODE [--force] [--json]   forget a drained aggregator, or a stopped reducer
  adclick admin split AD --fanout K [--json]     split a hot ad over K aggregators from a future minute (until unsplit)
  adclick admin unsplit AD [--json]              end AD's split (an operator's or an aggregator's) at a future minute

Common flags: --etcd-endpoints (default 127.0.0.1:2379, or ADCLICK_ETCD_ENDPOINTS), --json, --timeout.
`

func runAdmin(args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(os.Stderr, adminUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	verb, args := args[0], args[1:]
	fs := flag.NewFlagSet("adclick admin "+verb, flag.ContinueOnError)
	endpoints := flagenv.StringList{"127.0.0.1:2379"}
	fs.Var(&endpoints, "etcd-endpoints", "comma-separated etcd client endpoints")
	asJSON := fs.Bool("json", false, "print one JSON document instead of a table")
	timeout := fs.Duration("timeout", 15*time.Second, "give up after this long (drain --wait: default 15m)")
	at := fs.String("at", "", "owner: a time (RFC 3339, default now)")
	wait := fs.Bool("wait", false, "drain: wait until the node is drained")
	force := fs.Bool("force", false, "remove: remove a node that is not drained, losing what it had not handed over")
	fanout := fs.Int("fanout", 3, "split: the number of aggregators to split the ad over")
	// Flags may come before or after the positional argument.
	var pos []string
	for len(args) > 0 {
		if err := flagenv.Parse(fs, args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		args = fs.Args()
		if len(args) > 0 {
			pos, args = append(pos, args[0]), args[1:]
		}
	}
	if len(args) == 0 && len(pos) == 0 {
		_ = flagenv.Parse(fs, nil)
	}
	need := map[string]int{"status": 0, "owner": 1, "drain": 1, "remove": 1, "split": 1, "unsplit": 1}
	n, known := need[verb]
	if !known {
		fmt.Fprintf(os.Stderr, "adclick admin: unknown verb %q\n\n%s", verb, adminUsage)
		return 2
	}
	if len(pos) != n {
		fmt.Fprintf(os.Stderr, "adclick admin %s: want %d argument(s), got %d\n\n%s", verb, n, len(pos), adminUsage)
		return 2
	}
	if verb == "drain" && *wait && *timeout == 15*time.Second {
		*timeout = 15 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "adclick admin: etcd at %v: %v\n", []string(endpoints), err)
		return 1
	}
	defer cli.Close()
	a := admin.New(cli, nil)
	out := os.Stdout
	var doc any
	switch verb {
	case "status":
		st, err := a.Status(ctx)
		if err != nil {
			return fail(err)
		}
		doc = st
		if !*asJSON {
			printStatus(out, st)
		}
	case "owner":
		t := time.Now()
		if *at != "" {
			if t, err = time.Parse(time.RFC3339, *at); err != nil {
				fmt.Fprintf(os.Stderr, "adclick admin owner: --at %q: want RFC 3339, e.g. 2026-11-30T10:00:00Z\n", *at)
				return 2
			}
		}
		o, err := a.Owner(ctx, pos[0], t)
		if err != nil {
			return fail(err)
		}
		doc = o
		if !*asJSON {
			era := "the founding era"
			if o.EraFrom != nil {
				era = "the era from " + o.EraFrom.Format(time.RFC3339)
			}
			fmt.Fprintf(out, "ad %s, minute %s: %s (%s", o.AdID, o.Minute.Format(time.RFC3339), o.Aggregator, era)
			if o.HandedOver {
				fmt.Fprint(out, "; handed over by a drained aggregator")
			}
			fmt.Fprintln(out, ")")
			if len(o.Split) > 0 {
				fmt.Fprintf(out, "  split (hot ad): a click goes to piece xxhash(click_id) %% %d of %s\n", len(o.Split), strings.Join(o.Split, ","))
			}
		}
	case "drain":
		d, err := a.Drain(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		if !*asJSON {
			if d.Already {
				fmt.Fprintf(out, "%s is already draining: cut-over %s, heir %s\n", d.Node, d.Cutover.Format(time.RFC3339), d.Heir)
			} else {
				fmt.Fprintf(out, "%s leaves the ring at %s (in %s); its heir for late clicks is %s\n", d.Node, d.Cutover.Format(time.RFC3339),
					time.Until(d.Cutover).Round(time.Second), d.Heir)
			}
		}
		if *wait {
			start := time.Now()
			err := a.WaitDrained(ctx, d.Node, func(line string) {
				if !*asJSON {
					fmt.Fprintln(out, "  "+line)
				}
			})
			if err != nil {
				return fail(err)
			}
			if !*asJSON {
				fmt.Fprintf(out, "%s is drained (waited %s); stop it, then: adclick admin remove %s\n", d.Node, time.Since(start).Round(time.Second), d.Node)
			}
		}
		doc = d
	case "remove":
		r, err := a.Remove(ctx, pos[0], *force)
		if err != nil {
			return fail(err)
		}
		doc = r
		if !*asJSON {
			fmt.Fprintf(out, "%s %s removed\n", r.Kind, r.Node)
			for _, l := range r.Lost {
				fmt.Fprintln(out, "  lost: "+l)
			}
		}
	case "split", "unsplit":
		var g *admin.HotAd
		if verb == "split" {
			g, err = a.Split(ctx, pos[0], *fanout)
		} else {
			g, err = a.Unsplit(ctx, pos[0])
		}
		if err != nil {
			return fail(err)
		}
		doc = g
		if !*asJSON {
			fmt.Fprintf(out, "%s split over %s from %s (in %s)", g.AdID, strings.Join(g.Nodes, ","), g.EffectiveFrom.Format(time.RFC3339),
				time.Until(g.EffectiveFrom).Round(time.Second))
			if g.Until != nil {
				fmt.Fprintf(out, " until %s (in %s)", g.Until.Format(time.RFC3339), time.Until(*g.Until).Round(time.Second))
			}
			fmt.Fprintln(out)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(doc)
	}
	return 0
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "adclick admin: %v\n", err)
	return 1
}

func printStatus(w io.Writer, st *admin.Status) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	ts := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Format("2006-01-02 15:04")
	}
	fmt.Fprintf(tw, "AGGREGATOR\tSTATE\tALIVE\tCLICKS/S\tOWNS FROM\tOWNS UNTIL\tRING REV\tADDR\n")
	for _, a := range st.Aggregators {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%.0f\t%s\t%s\t%d\t%s\n", a.ID, a.State, a.Alive, a.ClicksPerSec, ts(a.OwnsFrom), ts(a.OwnsUntil), a.AppliedRing, a.Addr)
	}
	fmt.Fprintf(tw, "\nREDUCER\tALIVE\tADDR\n")
	for _, r := range st.Reducers {
		fmt.Fprintf(tw, "%s\t%v\t%s\n", r.ID, r.Alive, r.Addr)
	}
	fmt.Fprintf(tw, "\nROUTER\tALIVE\tRING REV\tADDR\n")
	for _, r := range st.Routers {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%s\n", r.ID, r.Alive, r.AppliedRing, r.Addr)
	}
	fmt.Fprintf(tw, "\nERA FROM\tAGGREGATORS\tCAUSE\n")
	for _, e := range st.Eras {
		from := "(founded)"
		if e.From != nil {
			from = e.From.Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", from, strings.Join(e.Aggregators, ","), e.Cause)
	}
	if len(st.HotAds) > 0 {
		fmt.Fprintf(tw, "\nHOT AD\tFANOUT\tNODES\tFROM\tUNTIL\tORIGIN\n")
		for _, g := range st.HotAds {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", g.AdID, g.Fanout, strings.Join(g.Nodes, ","), ts(&g.EffectiveFrom), ts(g.Until), g.Origin)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nring revision %d; liveness from %s; hot-ad grants: %d\n", st.RingRevision, st.Liveness, len(st.HotAds))
}
