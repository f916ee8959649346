package integration

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// row is one click of the TalkingData sample.
type row struct {
	line    int
	ip      uint32
	app     string
	device  string
	os      string
	channel string
	at      time.Time
}

// datasetPath finds ../shared/data/talkingdata_train_sample.csv relative to
// the project root.
func datasetPath(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	p := filepath.Join(root, "..", "shared", "data", "talkingdata_train_sample.csv")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("dataset not found at %s (it lives beside the repository in shared/data): %v", p, err)
	}
	return p
}

func loadDataset(t testing.TB) []row {
	t.Helper()
	f, err := os.Open(datasetPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if header[0] != "ip" || header[5] != "click_time" {
		t.Fatalf("unexpected header %v", header)
	}
	var rows []row
	for line := 2; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ip, err := strconv.ParseUint(rec[0], 10, 32)
		if err != nil {
			t.Fatalf("line %d: ip: %v", line, err)
		}
		at, err := time.Parse("2006-01-02 15:04:05", rec[5])
		if err != nil {
			t.Fatalf("line %d: click_time: %v", line, err)
		}
		rows = append(rows, row{line: line, ip: uint32(ip), app: rec[1], device: rec[2], os: rec[3], channel: rec[4], at: at.UTC()})
	}
	return rows
}

// dottedQuad renders the anonymised integer ip as an IPv4 address.
func dottedQuad(v uint32) string {
	return fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&0xff, v>>8&0xff, v&0xff)
}
