package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// transport is memberlist's network transport: a TCP listener for streams
// (push-pull, joins) and a UDP socket for packets (probes, gossip), on one
// ip:port. It does what memberlist's NetTransport does, except that a
// received packet gets a buffer of its own size: NetTransport reads every
// packet into a fresh 64 KiB buffer, and with probes every 250 ms that
// (with compression, turned off in create) was about half of everything
// adclick dev allocated at 50,000 clicks/s, so half of its garbage
// collections, each a chance of a latency spike for ingest.
type transport struct {
	tcp      *net.TCPListener
	udp      *net.UDPConn
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	log      *slog.Logger
	wg       sync.WaitGroup
	shutdown atomic.Bool
	done     chan struct{} // closed by Shutdown
}

// maxPacket is the largest UDP payload there is.
const maxPacket = 65536

// udpRecvBuf is the socket receive buffer asked for (memberlist's too).
const udpRecvBuf = 2 << 20

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// newTransport binds TCP and UDP on ip:port (port > 0) and starts reading.
func newTransport(ip net.IP, port int, log *slog.Logger) (*transport, error) {
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, fmt.Errorf("listen tcp: %w", err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		_ = tcp.Close()
		return nil, fmt.Errorf("listen udp: %w", err)
	}
	// Best effort: a smaller buffer drops packets under bursts, which
	// memberlist tolerates (it retries probes through peers).
	_ = udp.SetReadBuffer(udpRecvBuf)
	t := &transport{
		tcp:      tcp,
		udp:      udp,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		log:      log,
		done:     make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// FinalAdvertiseAddr returns the address memberlist announces: the one
// configured (create always sets it), else the bound one.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip == "" {
		a := t.tcp.Addr().(*net.TCPAddr)
		return a.IP, a.Port, nil
	}
	parsed := net.ParseIP(ip)
	if parsed == nil {
		return nil, 0, fmt.Errorf("gossip: advertise address %q is not an IP address", ip)
	}
	if v4 := parsed.To4(); v4 != nil {
		parsed = v4
	}
	return parsed, port, nil
}

func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	// Taken right after the write, as memberlist's RTT measurements expect.
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes both sockets and waits for the readers to stop, also
// one blocked handing over a packet or stream nobody takes any more.
func (t *transport) Shutdown() error {
	if t.shutdown.Swap(true) {
		return nil
	}
	close(t.done)
	err := errors.Join(t.tcp.Close(), t.udp.Close())
	t.wg.Wait()
	return err
}

// readPackets reads every packet into one buffer and hands memberlist a
// copy of exactly its size, stamped as close to the read as possible.
func (t *transport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.udp.ReadFrom(buf)
		ts := time.Now()
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			t.log.Warn("gossip: reading a UDP packet failed", "err", err)
			continue
		}
		if n < 1 {
			continue // memberlist needs a message type byte
		}
		p := &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: ts}
		select {
		case t.packetCh <- p:
		case <-t.done:
			return
		}
	}
}

// acceptStreams hands accepted TCP connections to memberlist, backing off
// on errors such as running out of file descriptors.
func (t *transport) acceptStreams() {
	defer t.wg.Done()
	const minBackoff, maxBackoff = 5 * time.Millisecond, time.Second
	backoff := time.Duration(0)
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			t.log.Warn("gossip: accepting a TCP connection failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-t.done:
				return
			}
			continue
		}
		backoff = 0
		select {
		case t.streamCh <- conn:
		case <-t.done:
			_ = conn.Close()
			return
		}
	}
}
