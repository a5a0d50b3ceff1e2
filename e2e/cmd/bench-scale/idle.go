package main

import (
	"context"
	"fmt"
	"time"
)

// idleResult is what sluice cost while the fleet it delivered stood still.
type idleResult struct {
	window time.Duration
	cpu    time.Duration
	// operations are the clones, fetches and pushes sluice made.
	operations int
}

// cpuShare is the share of one core sluice used.
func (r idleResult) cpuShare() float64 { return r.cpu.Seconds() / r.window.Seconds() }

// measureIdle waits until sluice has made no Git request for a while
// (the burst's last records and checks done), then measures its CPU time
// and Git requests over the idle window.
func (b *bench) measureIdle(ctx context.Context, window time.Duration) (idleResult, error) {
	snapshot := func() (cpu time.Duration, operations int, err error) {
		for _, p := range b.sluices {
			n, err := scrapeRemoteOperations(ctx, p.metricsURL)
			if err != nil {
				return 0, 0, err
			}
			u, err := processUsage(p.pid)
			if err != nil {
				return 0, 0, err
			}
			cpu, operations = cpu+u.cpu, operations+n
		}
		return cpu, operations, nil
	}
	const quiet = 10 * time.Second
	_, last, err := snapshot()
	if err != nil {
		return idleResult{}, err
	}
	deadline, quietSince := time.Now().Add(b.opts.timeout), time.Now()
	for time.Since(quietSince) < quiet {
		if time.Now().After(deadline) {
			return idleResult{}, fmt.Errorf("sluice kept making Git requests for %s after the fleet was recorded", b.opts.timeout)
		}
		select {
		case <-ctx.Done():
			return idleResult{}, ctx.Err()
		case <-time.After(time.Second):
		}
		_, n, err := snapshot()
		if err != nil {
			return idleResult{}, err
		}
		if n != last {
			last, quietSince = n, time.Now()
		}
	}

	fmt.Fprintf(b.out, "measuring sluice idle for %s\n", window)
	cpu0, ops0, err := snapshot()
	if err != nil {
		return idleResult{}, err
	}
	started := time.Now()
	select {
	case <-ctx.Done():
		return idleResult{}, ctx.Err()
	case <-time.After(window):
	}
	cpu1, ops1, err := snapshot()
	if err != nil {
		return idleResult{}, err
	}
	return idleResult{window: time.Since(started), cpu: cpu1 - cpu0, operations: ops1 - ops0}, nil
}
