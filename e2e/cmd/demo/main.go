// Command demo plays sluice's whole story on the local stack, through Git
// pushes only, and narrates it: a canary with a manual gate and a
// web-metric analysis, a blue-green app, and a plain Deployment sluice must
// leave alone, in one GitOps repository that Flux applies. The demo acts as
// the user, with git on a working clone; it reads the cluster to show
// progress but never changes a Delivery or a Rollout.
//
// It exits non-zero when a step does not happen in time, so it doubles as a
// test. SLUICE_DEMO_PAUSE=1 waits for Enter between steps; SLUICE_DEMO_KEEP=1
// keeps the stack running at the end until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/e2e/stack"
)

type options struct {
	bin, root, sluice string
	// cli is the sluice command line; built from --root when empty.
	cli         string
	pause, keep bool
}

func main() {
	var opts options
	flag.StringVar(&opts.bin, "bin", "bin", "folder of the tools 'make tools' built")
	flag.StringVar(&opts.root, "root", ".", "the sluice source tree")
	flag.StringVar(&opts.sluice, "sluice", "", "the sluice binary; built from --root when empty")
	flag.StringVar(&opts.cli, "cli", "", "the sluice command line (cmd/sluice); built from --root when empty")
	flag.Parse()
	opts.pause = os.Getenv("SLUICE_DEMO_PAUSE") == "1"
	opts.keep = os.Getenv("SLUICE_DEMO_KEEP") == "1"
	os.Exit(run(opts))
}

func run(opts options) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	d, err := newDemo(opts, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	defer d.close()

	started := time.Now()
	r := newRunner(d.out, opts.pause, d.kubeProgress)
	err = r.play(ctx, d.steps())
	if err == nil {
		err = d.printHistory(ctx)
	}
	r.printTimings(time.Since(started))
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "\ninterrupted")
		return 130
	case err != nil:
		d.failed = true
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		d.printSluiceLog()
	default:
		fmt.Fprintf(d.out, "\nThe whole story ran in %s.\n", round(time.Since(started)))
	}
	if opts.keep && d.stack != nil {
		d.keepRunning(ctx)
	}
	if err != nil {
		return 1
	}
	return 0
}

// demo holds the stack, the user's clone and what the story learned on
// the way.
type demo struct {
	opts   options
	out    io.Writer
	dir    string
	stack  *stack.Stack
	kube   *cluster
	metric *metricServer
	user   *clone
	remote server
	failed bool

	// candidate and branch are the template hash and promotion branch of
	// each app's release at its gate.
	candidate map[string]string
	branch    map[string]string
	// workerGeneration is the plain Deployment's generation once Flux
	// applied it.
	workerGeneration int64
}

func newDemo(opts options, out io.Writer) (*demo, error) {
	var err error
	for _, p := range []*string{&opts.bin, &opts.root} {
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(opts.bin, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("the control plane is not built (run 'make tools'): %w", err)
	}
	dir, err := os.MkdirTemp("", "sluice-demo-")
	if err != nil {
		return nil, err
	}
	metric, err := startMetricServer()
	if err != nil {
		return nil, err
	}
	return &demo{
		opts: opts, out: out, dir: dir, metric: metric,
		candidate: map[string]string{}, branch: map[string]string{},
	}, nil
}

// startStack builds sluice unless given, and starts the stack.
func (d *demo) startStack(ctx context.Context) error {
	sluice := d.opts.sluice
	if sluice == "" {
		sluice = filepath.Join(d.dir, "sluice")
		fmt.Fprintln(d.out, "      building sluice")
		build := exec.CommandContext(ctx, "go", "build", "-o", sluice, ".")
		build.Dir = d.opts.root
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building sluice: %v\n%s", err, out)
		}
	}
	if d.opts.cli == "" {
		d.opts.cli = filepath.Join(d.dir, "kubectl-sluice")
		build := exec.CommandContext(ctx, "go", "build", "-o", d.opts.cli, "./cmd/sluice")
		build.Dir = d.opts.root
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building the sluice command: %v\n%s", err, out)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{
		Dir:         d.dir,
		BinDir:      d.opts.bin,
		CRDDir:      filepath.Join(d.opts.root, "config", "crd", "bases"),
		InstallDir:  filepath.Join(d.opts.root, "config", "default"),
		Sluice:      sluice,
		GitUsername: "dana",
		GitPassword: stack.RandomSecret(),
		Logf:        func(f string, a ...any) { fmt.Fprintf(d.out, "      "+f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	d.stack = s
	d.kube, err = newCluster(s.Config)
	return err
}

// kubeProgress is the progress line of an app, once the stack runs.
func (d *demo) kubeProgress(ctx context.Context, app string) string {
	if d.kube == nil {
		return ""
	}
	return d.kube.progress(ctx, app)
}

// printSluiceLog prints the end of sluice's log and where every log is.
func (d *demo) printSluiceLog() {
	logs := filepath.Join(d.dir, "logs")
	path := filepath.Join(logs, "sluice.log")
	fmt.Fprintf(os.Stderr, "\nlast lines of %s:\n", path)
	for _, l := range stack.Tail(path, 30) {
		fmt.Fprintln(os.Stderr, "  "+l)
	}
	fmt.Fprintf(os.Stderr, "\nthe logs of every component are kept in %s\n", logs)
}

// keepRunning prints how to reach the stack and waits for Ctrl-C: the Git
// server and the metric endpoint live in this process.
func (d *demo) keepRunning(ctx context.Context) {
	envFile := filepath.Join(d.dir, "env")
	if err := os.WriteFile(envFile, []byte(d.stack.Env()), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
	}
	fmt.Fprintf(d.out, `
The stack keeps running (SLUICE_DEMO_KEEP=1). In another terminal:

  source %s
  kubectl get deliveries,rollouts,deployments -n %s
  git clone "http://$SLUICE_GIT_USERNAME:$SLUICE_GIT_PASSWORD@${SLUICE_GIT_URL#http://}/%s.git"

Everything is in %s: logs/, kubeconfig, and dana/%s, Dana's clone.
Press Ctrl-C to stop the stack.
`, envFile, namespace, repoName, d.dir, repoName)
	<-ctx.Done()
}

// close stops the stack and removes its folder, unless something failed:
// then the logs stay.
func (d *demo) close() {
	if d.stack != nil {
		fmt.Fprintln(d.out, "\nstopping the stack")
		d.stack.Stop()
	}
	_ = d.metric.Close()
	if !d.failed {
		_ = os.RemoveAll(d.dir)
	}
}
