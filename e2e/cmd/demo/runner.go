package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// A step of the story: what the user does, and what must happen then.
type step struct {
	// name is short, for the table of durations.
	name string
	// tell says in plain words what happens in this step.
	tell string
	// act is what the user does; nil when the step only waits.
	act func(context.Context) error
	// expect says what must happen within timeout, checked by until every
	// pollInterval; until returns nil once it happened and otherwise what
	// it sees instead.
	expect  string
	until   func(context.Context) error
	timeout time.Duration
	// watch names the apps whose progress is shown while waiting.
	watch []string
	// show prints what came of the step, once it happened.
	show func(context.Context) error
}

const pollInterval = 150 * time.Millisecond

// stepError says which step did not happen and what was seen instead.
type stepError struct {
	step    string
	expect  string
	timeout time.Duration
	seen    error
	err     error // the step's own error, when it failed rather than timed out
}

func (e *stepError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("step %q failed: %v", e.step, e.err)
	}
	return fmt.Sprintf("step %q did not happen within %s\n  expected: %s\n  seen:     %v", e.step, e.timeout, e.expect, e.seen)
}

// timing is how long a step took.
type timing struct {
	name     string
	duration time.Duration
	ok       bool
}

// runner plays steps one after the other, narrating them.
type runner struct {
	out      io.Writer
	pause    bool
	stdin    <-chan string
	progress func(ctx context.Context, app string) string
	timings  []timing
}

// newRunner reads Enter presses from stdin when pause is set.
func newRunner(out io.Writer, pause bool, progress func(context.Context, string) string) *runner {
	r := &runner{out: out, pause: pause, progress: progress}
	if pause {
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(os.Stdin)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		r.stdin = lines
	}
	return r
}

// play runs the steps in order and stops at the first that does not
// happen.
func (r *runner) play(ctx context.Context, steps []step) error {
	for i, s := range steps {
		fmt.Fprintf(r.out, "\n── %d/%d %s\n", i+1, len(steps), s.name)
		fmt.Fprintln(r.out, indent(s.tell, "      "))
		if err := r.waitForEnter(ctx); err != nil {
			return &stepError{step: s.name, err: errors.New("interrupted")}
		}
		start := time.Now()
		err := r.run(ctx, s)
		r.timings = append(r.timings, timing{name: s.name, duration: time.Since(start), ok: err == nil})
		if err != nil {
			return err
		}
		fmt.Fprintf(r.out, "      ✓ %s\n", round(time.Since(start)))
	}
	return nil
}

func (r *runner) run(ctx context.Context, s step) error {
	if s.act != nil {
		if err := s.act(ctx); err != nil {
			return &stepError{step: s.name, err: err}
		}
	}
	if s.until != nil {
		fmt.Fprintf(r.out, "      waiting until %s\n", s.expect)
		if err := r.poll(ctx, s); err != nil {
			return err
		}
	}
	if s.show != nil {
		if err := s.show(ctx); err != nil {
			return &stepError{step: s.name, err: err}
		}
	}
	return nil
}

// poll checks the step's condition every pollInterval until it holds,
// printing a line whenever a watched app changes.
func (r *runner) poll(ctx context.Context, s step) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	last := map[string]string{}
	var seen error
	for {
		for _, app := range s.watch {
			if line := r.progress(ctx, app); line != last[app] && ctx.Err() == nil {
				fmt.Fprintf(r.out, "      %5.1fs  %s\n", time.Since(start).Seconds(), line)
				last[app] = line
			}
		}
		err := s.until(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil {
			seen = err
		}
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), context.Canceled) {
				return &stepError{step: s.name, err: errors.New("interrupted")}
			}
			return &stepError{step: s.name, expect: s.expect, timeout: s.timeout, seen: seen}
		case <-time.After(pollInterval):
		}
	}
}

// waitForEnter pauses until the user presses Enter, when asked to pause.
func (r *runner) waitForEnter(ctx context.Context) error {
	if !r.pause {
		return nil
	}
	fmt.Fprint(r.out, "      [press Enter to continue]")
	select {
	case <-r.stdin:
		if !isTerminal(os.Stdin) { // a terminal echoes the Enter
			fmt.Fprintln(r.out)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// printTimings prints how long each step took, and the total.
func (r *runner) printTimings(total time.Duration) {
	fmt.Fprintf(r.out, "\n%-34s %9s\n", "step", "duration")
	for _, t := range r.timings {
		mark := ""
		if !t.ok {
			mark = "  ✗ did not happen"
		}
		fmt.Fprintf(r.out, "%-34s %9s%s\n", t.name, round(t.duration), mark)
	}
	fmt.Fprintf(r.out, "%-34s %9s\n", "total", round(total))
}

func round(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}

func isTerminal(f *os.File) bool {
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
