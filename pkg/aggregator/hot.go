package aggregator

import (
	"time"

	"github.com/adclick/adclick/pkg/hotad"
	"github.com/adclick/adclick/pkg/ring"
)

// observeHot feeds one accepted click (h: its id's hash) to the hot-ad
// detector, and counts it as a piece when its ad is split in its minute.
// Called by Forward under a.mu; does not allocate.
func (a *Aggregator) observeHot(rv *ring.Versions, ad string, h uint64, minute int64, now time.Time) {
	a.hot.Observe(ad, h, now)
	if rv.HasGrants() && rv.Split(ad, minute) {
		a.hot.Piece()
	}
}

// HotWindow returns the detector's last finished window at now and the
// clicks accepted as a piece of a split ad since the last call. Safe for
// concurrent use; meant for one caller about once a second.
func (a *Aggregator) HotWindow(now time.Time) (hotad.Window, int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hot.Last(now), a.hot.TakePieces()
}
