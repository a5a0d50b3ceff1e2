package main

import (
	"testing"
	"time"

	"github.com/fluxcd/pkg/runtime/jitter"
	"github.com/spf13/pflag"
)

func TestIntervalJitter(t *testing.T) {
	var o jitter.IntervalOptions
	fs := pflag.NewFlagSet("sluice", pflag.ContinueOnError)
	o.BindFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if o.Percentage == 0 {
		t.Fatal("--interval-jitter-percentage defaults to 0: intervals would not jitter")
	}
	if err := setIntervalJitter(jitter.IntervalOptions{Percentage: 100}); err == nil {
		t.Error("a jitter of 100% was accepted")
	}
	if err := setIntervalJitter(o); err != nil {
		t.Fatal(err)
	}

	const interval = 10 * time.Minute
	spread := interval * time.Duration(o.Percentage) / 100
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := jitter.JitteredIntervalDuration(interval)
		if d < interval-spread || d > interval+spread {
			t.Fatalf("jittered %s to %s, outside %s +/- %d%%", interval, d, interval, o.Percentage)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("1000 jittered intervals took %d values: the interval does not jitter", len(seen))
	}
}
