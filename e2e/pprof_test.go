package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// TestPprof asks sluice's metrics address for Go's profiles, as Flux's
// controllers serve them.
func TestPprof(t *testing.T) {
	g := NewWithT(t)
	base := strings.TrimSuffix(env.SluiceMetricsURL, "/metrics")
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/goroutine?debug=1": "goroutine profile: total",
		"/debug/pprof/heap?debug=1":      "heap profile:",
		"/debug/pprof/cmdline":           "--metrics-addr",
	} {
		resp, err := http.Get(base + path)
		g.Expect(err).NotTo(HaveOccurred())
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK), path)
		g.Expect(string(body)).To(ContainSubstring(want), path)
	}
}
