package clock

import (
	"testing"
	"time"
)

func TestMinute(t *testing.T) {
	tests := []struct {
		in   time.Time
		want int64
	}{
		{time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC), 1767261600},
		{time.Date(2026, 1, 1, 10, 0, 59, 999, time.UTC), 1767261600},
		{time.Date(2026, 1, 1, 10, 1, 0, 0, time.UTC), 1767261660},
		{time.Unix(-1, 0), -60},
		{time.Unix(-60, 0), -60},
	}
	for _, tc := range tests {
		if got := Minute(tc.in); got != tc.want {
			t.Errorf("Minute(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
	if got := MinuteTime(1767261600); !got.Equal(time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("MinuteTime = %v", got)
	}
}

func TestFake(t *testing.T) {
	f := NewFake(time.Unix(100, 0))
	f.Add(time.Minute)
	if got := f.Now().Unix(); got != 160 {
		t.Fatalf("after Add: %d", got)
	}
	f.Set(time.Unix(5, 0))
	if got := f.Now().Unix(); got != 5 {
		t.Fatalf("after Set: %d", got)
	}
}
