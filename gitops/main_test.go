package gitops

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestMain gives the writes' log lines a logger that drops them: no test
// of this package reads them, and without one controller-runtime prints a
// stack trace that it was never given a logger.
func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
