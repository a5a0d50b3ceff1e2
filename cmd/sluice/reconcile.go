package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newReconcileCommand(o *options) *cobra.Command {
	var timeout time.Duration
	var withSource bool
	cmd := &cobra.Command{
		Use:   "reconcile NAME [--with-source]",
		Short: "Ask sluice to reconcile the Delivery now, as flux reconcile does (reconcile.fluxcd.io/requestedAt), and wait until it has",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			c, err := o.cluster()
			if err != nil {
				return err
			}
			d, err := c.delivery(ctx, args[0])
			if err != nil {
				return err
			}
			if withSource {
				s, err := c.sourceOf(ctx, d)
				if err != nil {
					return err
				}
				if err := c.reconcileSource(ctx, s, "", timeout, func(msg string) { fmt.Fprintln(out, "►", msg) }); err != nil {
					return err
				}
			}
			fmt.Fprintf(out, "► annotating Delivery %s/%s\n", d.Namespace, d.Name)
			if err := c.requestReconcile(ctx, d, nil, timeout); err != nil {
				return err
			}
			fmt.Fprintf(out, "✔ Delivery %s/%s reconciled: %s\n", d.Namespace, d.Name, describeProgress(d))
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for each reconcile")
	cmd.Flags().BoolVar(&withSource, "with-source", false, "first have Flux fetch the GitRepository and apply the Kustomization")
	return cmd
}
