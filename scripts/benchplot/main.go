// Command benchplot draws a load run's series (adclick load --series) as a
// PNG: clicks acknowledged per second and the ack p99 of each second, so a
// stall at a minute boundary shows as a dip and a spike. Used by
// scripts/bench.sh for BENCH.md.
//
//	go run ./scripts/benchplot -title "full speed" -o bench-full.png full.csv
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

func main() {
	title := flag.String("title", "adclick load", "title of the plot")
	out := flag.String("o", "bench.png", "PNG to write")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: benchplot [-title T] [-o out.png] series.csv")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *title, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(in, title, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return err
	}
	var rate, p99 plotter.XYs
	for i, r := range rows {
		if i == 0 || len(r) < 5 {
			continue // header
		}
		at, _ := strconv.ParseFloat(r[0], 64)
		acked, _ := strconv.ParseFloat(r[1], 64)
		lat, _ := strconv.ParseFloat(r[4], 64)
		rate = append(rate, plotter.XY{X: at, Y: acked / 1000})
		p99 = append(p99, plotter.XY{X: at, Y: lat})
	}
	if len(rate) == 0 {
		return fmt.Errorf("%s holds no seconds", in)
	}
	top := plot.New()
	top.Title.Text = title
	top.Y.Label.Text = "thousand clicks acked / s"
	top.Y.Min = 0
	l1, err := plotter.NewLine(rate)
	if err != nil {
		return err
	}
	top.Add(l1, plotter.NewGrid())
	bottom := plot.New()
	bottom.X.Label.Text = "seconds (minute boundaries every 60 s)"
	bottom.Y.Label.Text = "ack p99 of the second (ms)"
	bottom.Y.Min = 0
	l2, err := plotter.NewLine(p99)
	if err != nil {
		return err
	}
	l2.Color = plotter.DefaultLineStyle.Color
	bottom.Add(l2, plotter.NewGrid())
	img := vgimg.New(10*vg.Inch, 6*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Millimeter * 4, PadX: vg.Millimeter * 2, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	png := vgimg.PngCanvas{Canvas: img}
	if _, err := png.WriteTo(w); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
