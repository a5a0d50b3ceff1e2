// Package e2e runs sluice end to end on a real local stack: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kwok, the Argo
// Rollouts controller, Flux's source-controller and kustomize-controller, a
// Git server, and sluice as its own process built from this tree. Scenarios
// drive it through Git pushes, as a user does.
package e2e

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

var (
	env       *stack.Stack
	k8sClient client.Client
	// stackOptions started env; a test starts another stack with them.
	stackOptions stack.Options
	scheme       = runtime.NewScheme()
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// The suite's own clients log nothing; the components log to files.
	ctrllog.SetLogger(logr.Discard())
	root, err := filepath.Abs("..")
	if err != nil {
		log.Print(err)
		return 1
	}
	bin := filepath.Join(root, "bin")
	if _, err := os.Stat(filepath.Join(bin, "kube-apiserver")); err != nil {
		log.Printf("the control plane is not built (run 'make tools'): %v", err)
		return 1
	}
	// Components of runs whose test binary was killed still hold ports and
	// CPU: stop them first.
	abandoned, err := stack.StopAbandoned(filepath.Join(os.TempDir(), "sluice-e2e-*"))
	if len(abandoned) > 0 {
		log.Printf("stopped what abandoned runs left running in %s", strings.Join(abandoned, ", "))
	}
	if err != nil {
		log.Printf("stopping abandoned runs: %v", err)
	}
	dir, err := os.MkdirTemp("", "sluice-e2e-")
	if err != nil {
		log.Print(err)
		return 1
	}

	sluice := filepath.Join(dir, "sluice")
	// Built as its image builds it (Dockerfile).
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", sluice, ".")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		log.Printf("building sluice: %v\n%s", err, out)
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stackOptions = stack.Options{
		BinDir:      bin,
		CRDDir:      filepath.Join(root, "config", "crd", "bases"),
		InstallDir:  filepath.Join(root, "config", "default"),
		Sluice:      sluice,
		GitUsername: "sluice-e2e",
		GitPassword: stack.RandomSecret(),
		// Debug lines must hold no secret either.
		SluiceArgs: []string{"--log-level=debug"},
		Logf:       log.Printf,
	}
	opts := stackOptions
	opts.Dir = dir
	// The working copies are searched for secrets.
	opts.SluiceArgs = append(slices.Clone(opts.SluiceArgs), "--git-dir="+sluiceGitDirIn(dir))
	env, err = stack.Start(ctx, opts)
	if err != nil {
		log.Printf("starting the stack: %v", err)
		keepLogs(dir)
		return 1
	}

	// Credentials that may fetch but not push, for the read-only source
	// scenario; set before any request reaches the server.
	env.Git.ReadOnlyUsername, env.Git.ReadOnlyPassword = "reader", stack.RandomSecret()
	// A bearer token it accepts too.
	env.Git.Token = stack.RandomSecret()

	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, deliveryv1.AddToScheme, sourcev1.AddToScheme, kustomizev1.AddToScheme, rolloutsv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	if k8sClient, err = client.New(env.Config, client.Options{Scheme: scheme}); err != nil {
		panic(err)
	}

	code := m.Run()
	env.Stop()
	if code != 0 {
		keepLogs(dir)
		return code
	}
	_ = os.RemoveAll(dir)
	return code
}

// keepLogs leaves the stack's folder in place and prints where it is and the
// end of every component's log.
func keepLogs(dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, f := range logs {
		fmt.Fprintf(os.Stderr, "\n===== last lines of %s\n", f)
		printTail(f, 25)
	}
	fmt.Fprintf(os.Stderr, "\nthe logs of every component are kept in %s\n", filepath.Join(dir, "logs"))
}

func printTail(path string, n int) {
	for _, l := range stack.Tail(path, n) {
		fmt.Fprintln(os.Stderr, l)
	}
}

// sluiceGitDirIn is where the sluice of the stack in dir keeps its working
// copies.
func sluiceGitDirIn(dir string) string { return filepath.Join(dir, "sluice-git") }

// sluiceGitDir is where the suite's sluice keeps its working copies.
func sluiceGitDir() string { return sluiceGitDirIn(env.Dir) }
