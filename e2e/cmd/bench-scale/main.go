// Command bench-scale measures sluice on the local stack with a fleet of
// K Kustomizations × N annotated Deployments in one repository, against
// Argo Rollouts alone creating as many Rollouts on the same stack in the
// same run.
//
// Argo alone goes first: the Rollouts are created directly and timed until
// all are Healthy, then deleted. Then sluice starts (one process, or one
// per shard with --shards), the fleet is pushed as one commit and Flux
// applies it; the run times, from the Kustomizations' creation, Flux having
// applied every Kustomization, every Delivery existing, every Rollout
// Healthy with its Deployment at zero, and every Delivery's stable template
// applied back from Git. It counts sluice's commits and pushes, reads
// sluice's CPU time and peak memory, and prints a table and the ratios.
//
// It exits non-zero when a phase does not complete within --timeout, so it
// doubles as a test.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

type options struct {
	bin, root, sluice string
	timeout           time.Duration
	keep              bool
	// commitsPerKustomization fails the run when sluice made more
	// commits than this many per Kustomization; 0 checks nothing.
	commitsPerKustomization int
	// idle is how long sluice is measured idle after the burst.
	idle time.Duration
	// personEvery, when set, is how often a person pushes a commit of
	// their own to main during sluice's burst.
	personEvery time.Duration
	// cpuProfile, when set, is the prefix of the files sluice's CPU
	// profiles of the burst are written to.
	cpuProfile string
}

func main() {
	var opts options
	var f fleet
	flag.IntVar(&f.kustomizations, "kustomizations", 100, "the number of Flux Kustomizations, one folder each")
	flag.IntVar(&f.appsPerKustomization, "apps-per-kustomization", 10, "the number of annotated Deployments in each Kustomization")
	flag.IntVar(&f.shards, "shards", 1, "the number of sluice processes, each watching the Kustomizations labelled sharding.fluxcd.io/key=shard<i>")
	flag.DurationVar(&opts.timeout, "timeout", 30*time.Minute, "how long each phase may take before the run fails")
	flag.StringVar(&opts.bin, "bin", "bin", "folder of the tools 'make tools' built")
	flag.StringVar(&opts.root, "root", ".", "the sluice source tree")
	flag.StringVar(&opts.sluice, "sluice", "", "the sluice binary; built from --root when empty")
	flag.BoolVar(&opts.keep, "keep", false, "keep the stack running at the end, until Ctrl-C")
	flag.DurationVar(&opts.idle, "idle", time.Minute, "how long to measure sluice's CPU and Git requests with the whole fleet delivered and nothing changing; 0 skips it")
	flag.IntVar(&opts.commitsPerKustomization, "max-commits-per-kustomization", 2, "fail when sluice makes more commits than this per Kustomization for the burst (adoptions in one, stable records in one); 0 checks nothing")
	flag.DurationVar(&opts.personEvery, "person-pushes-every", 0, "have a person push a commit of their own to main this often during sluice's burst (pulling with rebase, as a teammate would), and fail the run unless main keeps every one; 0 pushes none")
	flag.StringVar(&opts.cpuProfile, "cpu-profile", "", "record sluice's CPU profile during the burst, in files named <prefix>-<process>-NNN.pprof, and its heap profile after each, in <prefix>-<process>-NNN.heap")
	flag.Parse()
	if f.kustomizations < 1 || f.appsPerKustomization < 1 || f.shards < 1 {
		fmt.Fprintln(os.Stderr, "bench-scale: --kustomizations, --apps-per-kustomization and --shards must be at least 1")
		os.Exit(2)
	}
	os.Exit(run(opts, f))
}

func run(opts options, f fleet) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctrllog.SetLogger(logr.Discard())

	b, err := newBench(opts, f, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		return 1
	}
	defer b.close()

	started := time.Now()
	err = b.run(ctx)
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "\ninterrupted")
		return 130
	case err != nil:
		b.failed = true
		fmt.Fprintf(os.Stderr, "\nbench-scale failed: %v\n", err)
		b.printSluiceLogs()
	default:
		fmt.Fprintf(b.out, "\nThe benchmark ran in %s.\n", round(time.Since(started)))
	}
	if opts.keep && b.stack != nil {
		b.keepRunning(ctx)
	}
	if err != nil {
		return 1
	}
	return 0
}

// bench holds the stack and the fleet it runs.
type bench struct {
	opts  options
	fleet fleet
	out   io.Writer
	dir   string
	stack *stack.Stack
	kube  client.Client
	// watched reads the objects the run observes from informers, so that
	// watching the fleet costs the stack a watch per kind and not a list
	// of every object each second. Its lists are not copied: the run only
	// reads them.
	watched client.Reader
	sluices []sluiceProcess
	// applied holds the Kustomizations seen applied.
	applied map[string]bool
	failed  bool
	// runCtx ends when the bench closes; the informers live until then.
	runCtx  context.Context
	stopRun context.CancelFunc
}

func newBench(opts options, f fleet, out io.Writer) (*bench, error) {
	var err error
	for _, p := range []*string{&opts.bin, &opts.root} {
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(opts.bin, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("the control plane is not built (run 'make tools'): %w", err)
	}
	// Components of runs that were killed still hold ports and CPU.
	if abandoned, err := stack.StopAbandoned(filepath.Join(os.TempDir(), "sluice-bench-*")); len(abandoned) > 0 || err != nil {
		fmt.Fprintf(out, "stopped what abandoned runs left running in %s (%v)\n", strings.Join(abandoned, ", "), err)
	}
	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return nil, err
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	return &bench{opts: opts, fleet: f, out: out, dir: dir, applied: map[string]bool{}, runCtx: runCtx, stopRun: stopRun}, nil
}

// kwokNodes is the number of nodes that hold the fleet's pods during the
// handover, when each app runs its Deployment's pod and its Rollout's.
func (f fleet) kwokNodes() int {
	pods := 2 * f.apps()
	return max(1, (pods+stack.PodsPerNode-1)/stack.PodsPerNode)
}

// startStack builds sluice unless given, and starts the stack without it.
func (b *bench) startStack(ctx context.Context) error {
	sluice := b.opts.sluice
	if sluice == "" {
		sluice = filepath.Join(b.dir, "sluice")
		fmt.Fprintln(b.out, "building sluice")
		build := exec.CommandContext(ctx, "go", "build", "-o", sluice, ".")
		build.Dir = b.opts.root
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building sluice: %v\n%s", err, out)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{
		Dir:         b.dir,
		BinDir:      b.opts.bin,
		CRDDir:      filepath.Join(b.opts.root, "config", "crd", "bases"),
		InstallDir:  filepath.Join(b.opts.root, "config", "default"),
		Sluice:      sluice,
		DeferSluice: true,
		// Flux's advice for hundreds of apps: ten Kustomizations at a
		// time (https://fluxcd.io/flux/installation/configuration/vertical-scaling/).
		KustomizeControllerArgs: []string{"--concurrent=10"},
		KwokNodes:               b.fleet.kwokNodes(),
		GitUsername:             "bench",
		GitPassword:             stack.RandomSecret(),
		Logf:                    func(f string, a ...any) { fmt.Fprintf(b.out, "  "+f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	b.stack = s

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, deliveryv1.AddToScheme, sourcev1.AddToScheme, kustomizev1.AddToScheme, rolloutsv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	if b.kube, err = client.New(s.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	return b.watch(ctx, scheme)
}

// watch starts the informers the run reads the fleet from, for as long as
// the run lasts, and waits until they are synced. They keep no
// managedFields.
func (b *bench) watch(ctx context.Context, scheme *runtime.Scheme) error {
	c, err := cache.New(b.stack.Config, cache.Options{
		Scheme:           scheme,
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return err
	}
	for _, obj := range []client.Object{
		&kustomizev1.Kustomization{}, &deliveryv1.Delivery{}, &rolloutsv1.Rollout{}, &appsv1.Deployment{},
	} {
		if _, err := c.GetInformer(ctx, obj); err != nil {
			return err
		}
	}
	go func() { _ = c.Start(b.runCtx) }()
	if !c.WaitForCacheSync(ctx) {
		return errors.New("the bench's informers did not sync")
	}
	b.watched = c
	return nil
}

func (b *bench) run(ctx context.Context) error {
	f := b.fleet
	fmt.Fprintf(b.out, "%d apps in %d Kustomizations, %d sluice shard(s), %d kwok node(s), on %d CPUs\n\n",
		f.apps(), f.kustomizations, f.shards, f.kwokNodes(), goruntime.NumCPU())
	fmt.Fprintln(b.out, "starting the stack")
	if err := b.startStack(ctx); err != nil {
		return fmt.Errorf("starting the stack: %w", err)
	}

	fmt.Fprintf(b.out, "\nArgo Rollouts alone: creating %d Rollouts\n", f.apps())
	argo, err := b.runArgoAlone(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(b.out, "  all Healthy in %s; deleted, and their pods gone, in %s\n",
		round(argo.healthy.at), round(argo.cleanedUp))

	fmt.Fprintf(b.out, "\nsluice: %d Kustomizations of %d annotated Deployments each\n", f.kustomizations, f.appsPerKustomization)
	res, err := b.runSluice(ctx)
	if err != nil {
		return err
	}
	var idle *idleResult
	if b.opts.idle > 0 {
		r, err := b.measureIdle(ctx, b.opts.idle)
		if err != nil {
			return err
		}
		idle = &r
	}
	b.printTable(argo, res, idle)
	if idle != nil && idle.operations > 0 {
		return fmt.Errorf("sluice made %d Git requests in %s with nothing to write", idle.operations, round(idle.window))
	}
	if len(res.personLost) > 0 {
		return fmt.Errorf("main lost %d of the %d commits a person pushed during the burst: %s",
			len(res.personLost), len(res.personCommits), strings.Join(res.personLost, ", "))
	}
	if limit := b.opts.commitsPerKustomization * f.kustomizations; limit > 0 && len(res.commits) > limit {
		return fmt.Errorf("sluice made %d commits for %d Kustomizations, more than %d per Kustomization",
			len(res.commits), f.kustomizations, b.opts.commitsPerKustomization)
	}
	return nil
}

// printTable prints the measured figures and their ratios.
func (b *bench) printTable(argo *argoResult, res *sluiceResult, idle *idleResult) {
	f := b.fleet
	apps := float64(f.apps())
	fmt.Fprintf(b.out, "\n%d apps in %d Kustomizations, %d sluice shard(s)\n\n", f.apps(), f.kustomizations, f.shards)
	w := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name, value, ratio string) { fmt.Fprintf(w, "%s\t%s\t%s\t\n", name, value, ratio) }
	ratio := func(d time.Duration) string {
		return fmt.Sprintf("%.2f× Argo alone", d.Seconds()/argo.healthy.at.Seconds())
	}
	row("", "", "")
	row("Argo Rollouts alone: all Healthy", round(argo.healthy.at).String(), "")
	row("sluice: Flux applied all", round(res.applied.at).String(), ratio(res.applied.at))
	row("every Delivery exists", round(res.deliveries.at).String(), ratio(res.deliveries.at))
	row("every Rollout Healthy, Deployment at 0", round(res.healthy.at).String(), ratio(res.healthy.at))
	if pushed, ok := res.stablePushed(f.apps()); ok {
		row("every stable template pushed to Git", round(pushed).String(),
			fmt.Sprintf("%s after all Healthy", round(pushed-res.healthy.at)))
	}
	row("every stable template applied back by Flux", round(res.recorded.at).String(), ratio(res.recorded.at))
	row("commits", fmt.Sprint(len(res.commits)), fmt.Sprintf("%.2f per app", float64(len(res.commits))/apps))
	pushes := res.writes.count["pushed"]
	row("pushes", fmt.Sprint(pushes), fmt.Sprintf("%.2f per app, %s each", float64(pushes)/apps, round(res.writes.mean("pushed"))))
	if b.opts.personEvery > 0 {
		row("a person's commits during the burst", fmt.Sprint(len(res.personCommits)),
			fmt.Sprintf("one every %s, %d on main", b.opts.personEvery, len(res.personCommits)-len(res.personLost)))
	}
	row("CPU", fmt.Sprintf("%.1f s", res.usage.cpu.Seconds()), fmt.Sprintf("%.0f ms per app", res.usage.cpu.Seconds()*1000/apps))
	rssLabel := "peak RSS"
	if len(b.sluices) > 1 {
		rssLabel = "peak RSS, summed over shards"
	}
	row(rssLabel, fmt.Sprintf("%.0f MiB", float64(res.usage.peakRSS)/(1<<20)), "")
	if idle != nil {
		row(fmt.Sprintf("idle for %s: CPU", round(idle.window)), fmt.Sprintf("%.2f %%", 100*idle.cpuShare()), "of one core")
		row("idle: Git requests", fmt.Sprint(idle.operations), "")
	}
	_ = w.Flush()

	printStackCPU(b.out, argo.cpu, res.cpuApplied, res.cpuHealthy, res.cpuDone)
	printAPIRequests(b.out, 15, argo.requests, res.apiRequests)
	fmt.Fprintf(b.out, "\nsluice's commits record %s; its Git writes: %s; the commits they made: %s.\n",
		describeCounts(res.records), describeCounts(res.writes.count), describeCounts(res.commitsMade))
	fmt.Fprintf(b.out, "sluice's requests to the API server: %s; its reconciles: %s.\n", describeCounts(res.requests), describeCounts(res.reconciles))
	fmt.Fprintln(b.out, "sluice's commits, from the Kustomizations' creation:")
	for _, c := range res.commits {
		fmt.Fprintf(b.out, "  %8s  %s\n", round(c.at.Sub(res.started)), describeCounts(c.records))
	}
	if len(res.errors) == 0 {
		fmt.Fprintln(b.out, "sluice logged no error.")
		return
	}
	fmt.Fprintln(b.out, "sluice logged these errors:")
	for _, e := range slices.SortedFunc(maps.Keys(res.errors), func(a, b string) int { return res.errors[b] - res.errors[a] }) {
		fmt.Fprintf(b.out, "  %4d × %s\n", res.errors[e], e)
	}
}

// printStackCPU prints the CPU seconds each process of the stack used in
// Argo's run until all were Healthy, and in sluice's run until Flux had
// applied every Kustomization, until all were Healthy and until the end,
// busiest first.
func printStackCPU(out io.Writer, argo, sluiceApplied, sluiceHealthy, sluiceDone stackCPU) {
	fmt.Fprintln(out, "\nCPU seconds used by the stack's processes:")
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "\tArgo alone, to all Healthy\tsluice, to Flux applied all\tsluice, to all Healthy\tsluice, to stable applied back\t\n")
	names := slices.Collect(maps.Keys(sluiceDone))
	for name := range argo {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return int(sluiceHealthy[b] - sluiceHealthy[a]) })
	seconds := func(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }
	for _, name := range names {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t\n", name, seconds(argo[name]), seconds(sluiceApplied[name]), seconds(sluiceHealthy[name]), seconds(sluiceDone[name]))
	}
	fmt.Fprintf(w, "all\t%s\t%s\t%s\t%s\t\n", seconds(argo.total()), seconds(sluiceApplied.total()), seconds(sluiceHealthy.total()), seconds(sluiceDone.total()))
	_ = w.Flush()
}

func describeCounts(counts map[string]int) string {
	if len(counts) == 0 {
		return "nothing"
	}
	parts := []string{}
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	return strings.Join(parts, ", ")
}

// printSluiceLogs prints the end of each sluice's log and where every log
// is.
func (b *bench) printSluiceLogs() {
	logs := filepath.Join(b.dir, "logs")
	for _, p := range b.sluices {
		path := filepath.Join(logs, p.name+".log")
		fmt.Fprintf(os.Stderr, "\nlast lines of %s:\n", path)
		for _, l := range stack.Tail(path, 20) {
			fmt.Fprintln(os.Stderr, "  "+l)
		}
	}
	fmt.Fprintf(os.Stderr, "\nthe logs of every component are kept in %s\n", logs)
}

// keepRunning prints how to reach the stack and waits for Ctrl-C: the Git
// server lives in this process.
func (b *bench) keepRunning(ctx context.Context) {
	envFile := filepath.Join(b.dir, "env")
	if err := os.WriteFile(envFile, []byte(b.stack.Env()), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
	}
	fmt.Fprintf(b.out, "\nThe stack keeps running (--keep): source %s to use it; its logs are in %s.\nPress Ctrl-C to stop it.\n",
		envFile, b.stack.LogDir())
	<-ctx.Done()
}

// close stops the stack and removes its folder, unless something failed
// or the stack was kept: then the logs stay.
func (b *bench) close() {
	b.stopRun()
	if b.stack != nil {
		fmt.Fprintln(b.out, "\nstopping the stack")
		b.stack.Stop()
	}
	if !b.failed && !b.opts.keep {
		_ = os.RemoveAll(b.dir)
	}
}

// logErrors counts the error lines of a log by message, with the names,
// numbers and commits in them blanked so that alike errors count together.
func logErrors(path string) map[string]int {
	errs := map[string]int{}
	f, err := os.Open(path)
	if err != nil {
		return errs
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1024*1024), 1024*1024)
	for sc.Scan() {
		var line struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Level != "error" {
			continue
		}
		errs[blankDetails.ReplaceAllString(line.Msg+": "+line.Error, "…")]++
	}
	return errs
}

// blankDetails matches the parts of an error that differ between alike
// errors: quoted names, commits, numbers.
var blankDetails = regexp.MustCompile(`"[^"]*"|\b[0-9a-f]{7,40}\b|\b\d+(\.\d+)?(ms|s)?\b`)
