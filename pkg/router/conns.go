package router

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/adclick/adclick/pkg/grpcbuf"
)

// connPool keeps one long-lived client connection per address. Safe for
// concurrent use.
type connPool struct {
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newConnPool() *connPool { return &connPool{conns: map[string]*grpc.ClientConn{}} }

// get returns the connection to addr, creating it (lazily connecting) if needed.
func (p *connPool) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("router is closed")
	}
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcbuf.DialOption())
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

// retain closes and forgets the connections whose address is not in keep.
func (p *connPool) retain(keep map[string]bool) {
	p.mu.Lock()
	var drop []*grpc.ClientConn
	for addr, c := range p.conns {
		if !keep[addr] {
			drop = append(drop, c)
			delete(p.conns, addr)
		}
	}
	p.mu.Unlock()
	for _, c := range drop {
		_ = c.Close()
	}
}

func (p *connPool) close() error {
	p.mu.Lock()
	conns := p.conns
	p.conns, p.closed = map[string]*grpc.ClientConn{}, true
	p.mu.Unlock()
	var errs []error
	for _, c := range conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
