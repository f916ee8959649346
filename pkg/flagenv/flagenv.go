// Package flagenv parses command-line flags with environment fallbacks: every
// flag --some-flag also reads ADCLICK_SOME_FLAG. A flag given on the command
// line wins over the environment, which wins over the default.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// EnvName returns the environment variable read for flag name.
func EnvName(name string) string {
	return "ADCLICK_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args into fs, then sets every flag not given on the command
// line from its environment variable, if set. It makes fs's usage (--help)
// Usage: the flags, then the environment rule.
func Parse(fs *flag.FlagSet, args []string) error {
	fs.Usage = func() { Usage(fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, e)
			}
		}
	})
	return err
}

// Usage prints fs's flags with their defaults, as the flag package does,
// then how the environment sets them, so --help tells of ADCLICK_*.
func Usage(fs *flag.FlagSet) {
	out := fs.Output()
	if fs.Name() == "" {
		fmt.Fprintln(out, "Usage:")
	} else {
		fmt.Fprintf(out, "Usage of %s:\n", fs.Name())
	}
	fs.PrintDefaults()
	example := "some-flag"
	fs.VisitAll(func(f *flag.Flag) {
		if example == "some-flag" {
			example = f.Name
		}
	})
	fmt.Fprintf(out, "\nEvery flag can also be set in the environment: -%s as %s, and so on\n"+
		"(ADCLICK_, then the flag name in capitals with _ for -). A flag on the command line wins.\n",
		example, EnvName(example))
}

// StringList is a flag holding a comma-separated list.
type StringList []string

// String implements flag.Value.
func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value.
func (l *StringList) Set(s string) error {
	*l = nil
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
