package stack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HangingHost is a Git host gone wrong: it accepts connections on loopback
// and never answers them, until it is closed.
type HangingHost struct {
	// URL is the base URL under which it pretends to serve <name>.git.
	URL string

	listener net.Listener
	mu       sync.Mutex
	conns    []net.Conn
}

// StartHangingHost listens on a free loopback port.
func StartHangingHost() (*HangingHost, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &HangingHost{URL: "http://" + l.Addr().String(), listener: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	return h, nil
}

// RepositoryURL is the URL of repository <name>.git on the host.
func (h *HangingHost) RepositoryURL(name string) string {
	return h.URL + "/" + name + ".git"
}

// Accepted is how many connections it has accepted so far.
func (h *HangingHost) Accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Open is how many of the connections it accepted the other end still
// holds open.
func (h *HangingHost) Open() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	open := 0
	for _, c := range h.conns {
		if peerHolds(c) {
			open++
		}
	}
	return open
}

// Close stops listening and closes every connection it holds.
func (h *HangingHost) Close() error {
	err := h.listener.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.conns = nil
	return err
}

// peerHolds tells whether the other end of c still holds it open: what it
// sent is read and dropped, as the host never answers anyway.
func peerHolds(c net.Conn) bool {
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			var netErr net.Error
			return errors.As(err, &netErr) && netErr.Timeout()
		}
	}
}

// HeldBy is how many connections to the host process pid holds open, from
// the sockets of its file descriptors and the kernel's TCP table.
func (h *HangingHost) HeldBy(pid int) (int, error) {
	_, port, err := net.SplitHostPort(h.listener.Addr().String())
	if err != nil {
		return 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0, err
	}
	remote := fmt.Sprintf(":%04X", p)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	sockets := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			sockets[strings.TrimSuffix(inode, "]")] = true
		}
	}
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return 0, err
	}
	held := 0
	for _, line := range strings.Split(string(table), "\n")[1:] {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when
		// retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) > 9 && strings.HasSuffix(f[2], remote) && f[3] == tcpEstablished && sockets[f[9]] {
			held++
		}
	}
	return held, nil
}

// tcpEstablished is the state of an open connection in /proc/net/tcp.
const tcpEstablished = "01"
