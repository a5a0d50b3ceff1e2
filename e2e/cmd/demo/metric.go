package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// metricServer is the endpoint the canary's web-metric analysis asks: it
// answers a success rate of 1.0 for every image except version v3, which
// fails with 0.42. It remembers what it answered, for the narration.
type metricServer struct {
	URL string

	server *http.Server
	mu     sync.Mutex
	asked  []string
}

func startMetricServer() (*metricServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &metricServer{URL: "http://" + l.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("/success-rate", m.successRate)
	m.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = m.server.Serve(l) }()
	return m, nil
}

func (m *metricServer) successRate(w http.ResponseWriter, r *http.Request) {
	image := r.URL.Query().Get("image")
	rate := "1.0"
	if strings.HasSuffix(image, ":v3") {
		rate = "0.42"
	}
	m.mu.Lock()
	m.asked = append(m.asked, fmt.Sprintf("success rate of %s: %s", image, rate))
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"successRate": %s}`, rate)
}

// answers returns what the endpoint answered since the last call.
func (m *metricServer) answers() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.asked
	m.asked = nil
	return out
}

func (m *metricServer) Close() error { return m.server.Close() }
