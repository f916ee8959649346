package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkCommitCounts commits what a closing minute brings a reducer:
// batches of 16384 increments for random ads (as partials arrive, in no
// key order), into a store already holding earlier minutes. Reported per
// increment.
func BenchmarkCommitCounts(b *testing.B) {
	db, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	const perBatch = 16384
	ads := make([]string, 1<<20)
	for i := range ads {
		ads[i] = fmt.Sprintf("ad-%d", i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += perBatch {
		batch := db.NewBatch()
		minute := int64(i/(perBatch*32)) * 60
		for j := 0; j < perBatch; j++ {
			if err := batch.AddCount(0, minute, ads[rng.IntN(len(ads))], 1); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Commit(); err != nil {
			b.Fatal(err)
		}
		batch.Close()
	}
}

// BenchmarkAdCountDay reads one ad's count over a day of stored minutes
// (1,440 minutes of 256 ads each): what a reducer does for a window that
// starts before its memory floor (one seek per stored minute).
func BenchmarkAdCountDay(b *testing.B) {
	db, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const minutes, perMinute = 1440, 256
	const base = int64(1_700_000_040)
	for m := range int64(minutes) {
		batch := db.NewBatch()
		for a := range perMinute {
			if err := batch.AddCount(0, base+60*m, fmt.Sprintf("ad-%d", a), 1); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Commit(); err != nil {
			b.Fatal(err)
		}
		batch.Close()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := db.AdCount(0, fmt.Sprintf("ad-%d", i%perMinute), base, base+60*minutes)
		if err != nil || n != minutes {
			b.Fatalf("AdCount = %d, %v; want %d", n, err, minutes)
		}
	}
}
