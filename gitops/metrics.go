package gitops

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// writeDuration is how long sluice's Git writes take, from taking the
// repository to the pushed commit, by outcome.
var writeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "sluice_git_write_duration_seconds",
	Help:    "How long a Git write takes: fetch, edit, commit and push, retries included.",
	Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
}, []string{"result"})

// remoteOperations counts what sluice asks of Git servers: clones,
// fetches and pushes, by outcome. With nothing to write it stays still.
var remoteOperations = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "sluice_git_remote_operations_total",
	Help: "Clones, fetches and pushes sluice made to Git servers, by operation and result.",
}, []string{"operation", "result"})

// commitsMade counts the commits sluice made for its writes, by how: by
// editing the branch's head, or by putting the changes of a commit the
// moved branch refused onto its new head as they were (see replay.go).
var commitsMade = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "sluice_git_commits_total",
	Help: "Commits sluice made for its writes, pushed or not, by how: edited on the branch's head, or replayed onto a branch that moved.",
}, []string{"made"})

func init() {
	metrics.Registry.MustRegister(writeDuration, remoteOperations, commitsMade)
}

// countRemote counts one remote operation that ended with err.
func countRemote(operation string, err error) {
	result := "succeeded"
	if err != nil {
		result = "failed"
	}
	remoteOperations.WithLabelValues(operation, result).Inc()
}

// logWrite logs one line for a batch of writes that became one commit, as
// Flux controllers log a reconciliation: what was written, the commit, the
// attempts and the duration, and observes the duration.
func logWrite(ctx context.Context, src Source, batch []*waitingWrite, outcomes []*writeOutcome, took time.Duration) {
	result := "pushed"
	var res Result
	var err error
	for _, o := range outcomes {
		if o == nil {
			continue
		}
		if o.err != nil && err == nil {
			err = o.err
		}
		if o.res.Pushed || res.Commit == "" {
			res = o.res
		}
	}
	switch {
	case err != nil:
		result = "failed"
	case !res.Pushed:
		result = "unchanged"
	}
	writeDuration.WithLabelValues(result).Observe(took.Seconds())

	subjects := make([]string, 0, len(batch))
	for _, b := range batch {
		subject, _, _ := strings.Cut(strings.TrimSpace(b.change.Message), "\n")
		subjects = append(subjects, subject)
	}
	logger := log.FromContext(ctx).WithValues("repository", src.URL, "branch", batch[0].change.Branch,
		"commit", res.Commit, "attempts", res.Attempts, "writes", len(batch), "changes", subjects)
	if res.Replayed > 0 {
		logger = logger.WithValues("replayed", res.Replayed)
	}
	if err != nil {
		logger.Error(err, "Git write failed after "+took.Round(time.Millisecond).String())
		return
	}
	logger.Info("Git write " + result + " in " + took.Round(time.Millisecond).String())
}

// Collectors are the metrics the package registers, for what reads their
// names (the dashboard and alert rules of config/monitoring).
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{writeDuration, commitsMade}
}
