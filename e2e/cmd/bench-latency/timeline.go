package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// sighting is something seen at a moment: an object as a watch delivered
// it, or a push the Git server took in.
type sighting struct {
	at  time.Time
	obj any
}

// timeline holds what was seen, in order, for waiters to search from a
// mark: a waiter registered after the thing happened still finds it.
type timeline struct {
	mu      sync.Mutex
	seen    []sighting
	changed chan struct{}
}

func newTimeline() *timeline { return &timeline{changed: make(chan struct{})} }

func (t *timeline) add(obj any) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seen = append(t.seen, sighting{at: now, obj: obj})
	close(t.changed)
	t.changed = make(chan struct{})
}

// mark is where a search for what follows starts.
func (t *timeline) mark() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen)
}

// waitFor returns the first sighting from mark on that match accepts, and
// the mark after it.
func (t *timeline) waitFor(ctx context.Context, from int, what string, match func(any) bool) (sighting, int, error) {
	for {
		t.mu.Lock()
		for i := from; i < len(t.seen); i++ {
			if match(t.seen[i].obj) {
				s := t.seen[i]
				t.mu.Unlock()
				return s, i + 1, nil
			}
		}
		from = len(t.seen)
		changed := t.changed
		t.mu.Unlock()
		select {
		case <-ctx.Done():
			return sighting{}, from, fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-changed:
		}
	}
}

// firstAt returns the first sighting from mark on at or after at that
// match accepts.
func (t *timeline) firstAfter(ctx context.Context, from int, at time.Time, what string, match func(any) bool) (sighting, error) {
	for {
		s, next, err := t.waitFor(ctx, from, what, match)
		if err != nil || !s.at.Before(at) {
			return s, err
		}
		from = next
	}
}

// watchInto adds to t every object a watch of list delivers, watching
// again when the API server ends the watch, until ctx ends.
func watchInto(ctx context.Context, c client.WithWatch, list client.ObjectList, t *timeline, opts ...client.ListOption) error {
	w, err := c.Watch(ctx, list, opts...)
	if err != nil {
		return err
	}
	go func() {
		for {
			for ev := range w.ResultChan() {
				if ev.Type == watch.Added || ev.Type == watch.Modified {
					t.add(ev.Object)
				}
			}
			if ctx.Err() != nil {
				return
			}
			// NOTE: what changed between the two watches is listed again
			// as Added by the new one.
			for {
				if w, err = c.Watch(ctx, list, opts...); err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if ctx.Err() != nil {
				return
			}
		}
	}()
	return nil
}

// last returns the latest sighting, if any.
func (t *timeline) last() (sighting, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.seen) == 0 {
		return sighting{}, false
	}
	return t.seen[len(t.seen)-1], true
}

// all returns every sighting so far.
func (t *timeline) all() []sighting {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.seen)
}
