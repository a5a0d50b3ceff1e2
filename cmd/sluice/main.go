// Command sluice shows and steers sluice's Deliveries: it reads the cluster
// through the user's kubeconfig and writes every change as a commit with the
// user's own Git identity, never a patch to the cluster. Installed as
// kubectl-sluice on the PATH, it is also `kubectl sluice`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// exitError ends the command with a code of its own, after its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "✗", err)
		var e *exitError
		if errors.As(err, &e) {
			os.Exit(e.code)
		}
		os.Exit(1)
	}
}

// options are the flags every command shares.
type options struct {
	kube *genericclioptions.ConfigFlags
	git  gitFlags
	// allNamespaces: -A.
	allNamespaces bool
	// commits are the commits tree found, by revision and images.
	commits map[string]*node
}

func newRootCommand() *cobra.Command {
	o := &options{kube: genericclioptions.NewConfigFlags(true)}
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Show and steer sluice's progressive deliveries, through Git",
		Long: `sluice shows the Deliveries of a cluster and what runs them, and changes
them the Git way: every approval, abort, retry, rollback and suspension is a
commit pushed with your own Git identity, which Flux applies. The only
writes to the cluster are Flux's reconcile requests.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o.kube.AddFlags(root.PersistentFlags())
	o.git.addFlags(root.PersistentFlags())
	root.AddCommand(
		newGetCommand(o),
		newTreeCommand(o),
		newStatusCommand(o),
		newApproveCommand(o),
		newAbortCommand(o),
		newRetryCommand(o),
		newRollbackCommand(o),
		newSuspendCommand(o, true),
		newSuspendCommand(o, false),
		newHistoryCommand(o),
		newReconcileCommand(o),
	)
	return root
}
