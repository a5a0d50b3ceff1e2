package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// milestone is a count that must reach its total, and when it first did,
// counted from the start of the run it belongs to.
type milestone struct {
	name  string
	done  int
	total int
	at    time.Duration
	// detail, when set, says what makes up done until it is reached.
	detail string
}

func (m *milestone) reached() bool { return m.at > 0 }

// observe notes a new count at elapsed, and the time it reached the total.
func (m *milestone) observe(done int, elapsed time.Duration) {
	m.done = done
	if !m.reached() && done >= m.total {
		m.at = elapsed
	}
}

func (m *milestone) String() string {
	if m.reached() {
		return fmt.Sprintf("%s %d/%d (%s)", m.name, m.done, m.total, round(m.at))
	}
	if m.detail != "" {
		return fmt.Sprintf("%s %d/%d (%s)", m.name, m.done, m.total, m.detail)
	}
	return fmt.Sprintf("%s %d/%d", m.name, m.done, m.total)
}

// poll calls observe every interval until it reports every milestone
// reached, the context ends or timeout passes, printing the milestones
// every progressEvery.
func poll(ctx context.Context, out io.Writer, started time.Time, timeout time.Duration,
	milestones []*milestone, observe func(ctx context.Context, elapsed time.Duration) error) error {
	const interval, progressEvery = time.Second, 10 * time.Second
	lastProgress := time.Now()
	var lastErr error
	for {
		elapsed := time.Since(started)
		if err := observe(ctx, elapsed); err != nil {
			lastErr = err
		}
		all := true
		for _, m := range milestones {
			all = all && m.reached()
		}
		if all {
			return nil
		}
		if time.Since(lastProgress) >= progressEvery {
			lastProgress = time.Now()
			fmt.Fprintf(out, "  %6s  %s\n", round(elapsed), describe(milestones))
		}
		if elapsed > timeout {
			err := fmt.Errorf("not done after %s: %s", timeout, describe(milestones))
			if lastErr != nil {
				err = fmt.Errorf("%w (last error: %v)", err, lastErr)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func describe(milestones []*milestone) string {
	parts := make([]string, len(milestones))
	for i, m := range milestones {
		parts[i] = m.String()
	}
	return strings.Join(parts, " · ")
}

func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

// usage is what a process used: CPU time, user and system, and its peak
// resident memory.
type usage struct {
	cpu     time.Duration
	peakRSS int64 // bytes
}

func (u usage) add(o usage) usage {
	return usage{cpu: u.cpu + o.cpu, peakRSS: u.peakRSS + o.peakRSS}
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times; 100 on
// every Linux architecture Go runs on.
const clockTicks = 100

// processUsage reads a running process's CPU time (processCPU) and its
// peak resident set from /proc/<pid>/status (VmHWM).
func processUsage(pid int) (usage, error) {
	cpu, err := processCPU(pid, false)
	if err != nil {
		return usage{}, err
	}
	u := usage{cpu: cpu}

	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return usage{}, err
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		value, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(value)
		kib, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return usage{}, fmt.Errorf("/proc/%d/status: VmHWM: %w", pid, err)
		}
		u.peakRSS = kib * 1024
		return u, nil
	}
	return usage{}, fmt.Errorf("/proc/%d/status has no VmHWM", pid)
}

// gitWrites are sluice's Git writes, from its
// sluice_git_write_duration_seconds histogram: how many, and how long they
// took in all, by result (pushed, unchanged, failed).
type gitWrites struct {
	count   map[string]int
	seconds map[string]float64
}

func (w *gitWrites) add(o gitWrites) {
	if w.count == nil {
		w.count, w.seconds = map[string]int{}, map[string]float64{}
	}
	for k, v := range o.count {
		w.count[k] += v
	}
	for k, v := range o.seconds {
		w.seconds[k] += v
	}
}

// mean is how long a write with result took on average.
func (w gitWrites) mean(result string) time.Duration {
	if w.count[result] == 0 {
		return 0
	}
	return time.Duration(w.seconds[result] / float64(w.count[result]) * float64(time.Second))
}

// scrapeGitWrites reads the count and duration of sluice's Git writes by
// result from its metric endpoint.
func scrapeGitWrites(ctx context.Context, metricsURL string) (gitWrites, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return gitWrites{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return gitWrites{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return gitWrites{}, fmt.Errorf("%s: %s", metricsURL, resp.Status)
	}
	writes := gitWrites{count: map[string]int{}, seconds: map[string]float64{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1024*1024), 1024*1024)
	const metric = "sluice_git_write_duration_seconds_"
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), metric)
		if !ok {
			continue
		}
		series, rest, ok := strings.Cut(rest, `{result="`)
		if !ok || (series != "count" && series != "sum") {
			continue
		}
		result, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return gitWrites{}, fmt.Errorf("%s: %q: %w", metricsURL, sc.Text(), err)
		}
		if series == "count" {
			writes.count[result] += int(n)
		} else {
			writes.seconds[result] += n
		}
	}
	return writes, sc.Err()
}

// scrapeRemoteOperations reads how many clones, fetches and pushes sluice
// made in all, from its sluice_git_remote_operations_total counter.
func scrapeRemoteOperations(ctx context.Context, metricsURL string) (int, error) {
	counts, err := scrapeCounter(ctx, metricsURL, "sluice_git_remote_operations_total", "")
	if err != nil {
		return 0, err
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	return total, nil
}

// scrapeCounter reads a counter from a metric endpoint, summed by the value
// of its label by ("" sums every series into one).
func scrapeCounter(ctx context.Context, metricsURL, name, by string) (map[string]int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", metricsURL, resp.Status)
	}
	counts := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1024*1024), 1024*1024)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", metricsURL, sc.Text(), err)
		}
		key := ""
		if by != "" {
			_, v, _ := strings.Cut(labels, by+`="`)
			key, _, _ = strings.Cut(v, `"`)
		}
		counts[key] += int(n)
	}
	return counts, sc.Err()
}

// stackCPU is the CPU time each of the stack's processes had used at one
// moment, by component; benchProcess is this program, which serves Git
// (its git subprocesses included) and observes the fleet.
type stackCPU map[string]time.Duration

const benchProcess = "bench-scale (Git server)"

// stackCPU reads the CPU time of every component of the stack and of this
// program.
func (b *bench) stackCPU() (stackCPU, error) {
	cpu := stackCPU{}
	for name, pid := range b.stack.Processes() {
		t, err := processCPU(pid, false)
		if err != nil {
			return nil, err
		}
		cpu[name] = t
	}
	t, err := processCPU(os.Getpid(), true)
	if err != nil {
		return nil, err
	}
	cpu[benchProcess] = t
	return cpu, nil
}

// since is what each component used from earlier to s; a component that
// started in between used all of its time since.
func (s stackCPU) since(earlier stackCPU) stackCPU {
	d := stackCPU{}
	for name, t := range s {
		d[name] = t - earlier[name]
	}
	return d
}

func (s stackCPU) total() time.Duration {
	var t time.Duration
	for _, c := range s {
		t += c
	}
	return t
}

// processCPU reads a running process's CPU time, user and system, from
// /proc/<pid>/stat (fields 14 and 15), and with children that of the
// children it waited for (fields 16 and 17).
func processCPU(pid int, children bool) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, may hold spaces; it ends at the last ')'.
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	fields := strings.Fields(rest)
	if len(fields) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	// fields[0] is field 3, the state.
	last := 13
	if children {
		last = 15
	}
	var ticks int64
	for _, f := range fields[11:last] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
