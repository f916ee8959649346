package filter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/etcdembed"
	"github.com/adclick/adclick/pkg/etcdembed/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func startEtcd(t *testing.T) (*etcdembed.Server, *clientv3.Client) { return etcdtest.Start(t) }

// TestCreateAtMostBoundsFilters creates filters concurrently, as several
// routers would, against a limit: exactly the limit must succeed, the rest
// fail with ErrTooMany naming --max-filters, and a deletion makes room.
func TestCreateAtMostBoundsFilters(t *testing.T) {
	_, cli := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := NewStore(cli, clock.NewFake(time.Date(2026, 3, 1, 12, 0, 30, 0, time.UTC)))
	const max, tries = 5, 12
	var wg sync.WaitGroup
	errs := make([]error, tries)
	for i := range tries {
		wg.Go(func() {
			_, errs[i] = st.CreateAtMost(ctx, Filter{Countries: []string{"us"}, UserIDs: []string{fmt.Sprint("u", i)}}, max)
		})
	}
	wg.Wait()
	created := 0
	for _, err := range errs {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, ErrTooMany) || !strings.Contains(err.Error(), "--max-filters"):
			t.Fatalf("create: %v; want ErrTooMany naming --max-filters", err)
		}
	}
	list, err := st.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if created != max || len(list) != max {
		t.Fatalf("%d creations succeeded and %d filters stored; want %d", created, len(list), max)
	}
	if err := st.Delete(ctx, list[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateAtMost(ctx, Filter{Countries: []string{"de"}}, max); err != nil {
		t.Fatalf("create after a delete: %v", err)
	}
	if _, err := st.CreateAtMost(ctx, Filter{Countries: []string{"de"}}, max); !errors.Is(err, ErrTooMany) {
		t.Fatalf("create over the limit: %v", err)
	}
}

// TestNormalizeBoundsValues checks the limit on the values of one filter.
func TestNormalizeBoundsValues(t *testing.T) {
	many := make([]string, MaxValues+1)
	for i := range many {
		many[i] = fmt.Sprint("u", i)
	}
	_, err := Normalize(Filter{UserIDs: many})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprintf("at most %d", MaxValues)) {
		t.Fatalf("Normalize(%d user ids): %v; want ErrInvalid naming %d", len(many), err, MaxValues)
	}
	if _, err := Normalize(Filter{UserIDs: many[:MaxValues]}); err != nil {
		t.Fatalf("Normalize(%d user ids): %v", MaxValues, err)
	}
}
