package gossip

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestTransport checks the transport against real sockets: a packet
// arrives with a buffer of exactly its size (not the read buffer, which
// the next packet overwrites), streams are accepted, and Shutdown stops
// both readers even while memberlist is not reading.
func TestTransport(t *testing.T) {
	ip := net.ParseIP("127.0.0.1")
	port, err := pickPort(ip)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := newTransport(ip, port, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	if _, err := newTransport(ip, port, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a second transport bound the same port")
	}
	gotIP, gotPort, err := tr.FinalAdvertiseAddr("", 0)
	if err != nil || !gotIP.Equal(ip) || gotPort != port {
		t.Fatalf("FinalAdvertiseAddr = %v, %d, %v; want the bound %s", gotIP, gotPort, err, addr)
	}
	if _, _, err := tr.FinalAdvertiseAddr("not-an-ip", 1); err == nil {
		t.Fatal("FinalAdvertiseAddr took a name")
	}

	// Two packets through the transport's own socket, to itself.
	first, second := []byte("first packet"), []byte("2nd")
	for _, b := range [][]byte{first, second} {
		if _, err := tr.WriteTo(b, addr); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(10 * time.Second)
	var got [][]byte
	for len(got) < 2 {
		select {
		case p := <-tr.PacketCh():
			if p.Timestamp.IsZero() || p.From == nil {
				t.Fatalf("packet without timestamp or sender: %+v", p)
			}
			got = append(got, p.Buf)
		case <-deadline:
			t.Fatalf("got %d of 2 packets", len(got))
		}
	}
	if !bytes.Equal(got[0], first) || !bytes.Equal(got[1], second) || cap(got[1]) >= maxPacket {
		t.Fatalf("packets %q, %q (cap %d); want %q, %q, not in a read-sized buffer", got[0], got[1], cap(got[1]), first, second)
	}

	// A stream, dialed through the transport.
	c, err := tr.DialTimeout(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-tr.StreamCh():
		b := make([]byte, 5)
		if _, err := io.ReadFull(s, b); err != nil || string(b) != "hello" {
			t.Fatalf("stream read %q, %v", b, err)
		}
		_ = s.Close()
	case <-deadline:
		t.Fatal("no stream accepted")
	}
	_ = c.Close()

	// A packet nobody reads leaves the packet reader blocked on the
	// channel; Shutdown must not wait for it forever.
	if _, err := tr.WriteTo([]byte("unread"), addr); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tr.Shutdown() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown hung with a packet nobody read")
	}
}
