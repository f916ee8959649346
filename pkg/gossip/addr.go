package gossip

import (
	"fmt"
	"net"
	"strconv"
)

// pickPort returns a port on ip free for both TCP and UDP, as memberlist
// binds both on one port. Another process may still take it before
// memberlist binds; Start retries on that.
func pickPort(ip net.IP) (int, error) {
	const tries = 20
	host := ip.String()
	for range tries {
		tl, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, fmt.Errorf("gossip: pick a port on %s: %w", host, err)
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		_ = tl.Close()
		if err == nil {
			_ = ul.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("gossip: no port on %s free for both TCP and UDP after %d tries", host, tries)
}

// resolveAdvertise turns --gossip-advertise-addr into the IP and port
// memberlist announces: a name is resolved once, now; a missing or zero port
// is the bound one. Without an advertise address, the bind address is it.
func resolveAdvertise(advertise string, bindIP net.IP, bindPort int) (net.IP, int, error) {
	if advertise == "" {
		return bindIP, bindPort, nil
	}
	host, port, err := splitAdvertise(advertise)
	if err != nil {
		return nil, 0, err
	}
	if port == 0 {
		port = bindPort
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip, port, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return nil, 0, fmt.Errorf("--gossip-advertise-addr=%q: resolve %s: %v", advertise, host, err)
	}
	for _, ip := range ips { // prefer IPv4, as memberlist's own address choice does
		if ip.To4() != nil {
			return ip, port, nil
		}
	}
	return ips[0], port, nil
}

// isSelf reports whether seed (host:port) names this node: its advertised or
// bound address, or, when bound to every interface, any local address on the
// bound port.
func isSelf(seed string, advIP net.IP, advPort int, bindIP net.IP, bindPort int) bool {
	a, err := net.ResolveTCPAddr("tcp", seed)
	if err != nil {
		return false
	}
	if a.Port == advPort && a.IP.Equal(advIP) {
		return true
	}
	if a.Port != bindPort {
		return false
	}
	if a.IP.Equal(bindIP) {
		return true
	}
	if !bindIP.IsUnspecified() {
		return false
	}
	if a.IP.IsLoopback() || a.IP.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok && n.IP.Equal(a.IP) {
			return true
		}
	}
	return false
}
