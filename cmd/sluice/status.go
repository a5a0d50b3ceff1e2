package main

import (
	"fmt"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/spf13/cobra"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// verdict is what status makes of a Delivery: done healthy, done
// rejected or failed, or not done yet.
type verdict int

const (
	pending verdict = iota
	healthyVerdict
	rejected
)

func judge(d *deliveryv1.Delivery) verdict {
	st := d.Status
	switch st.Phase {
	case deliveryv1.PhaseRejected, deliveryv1.PhaseFailed:
		return rejected
	case deliveryv1.PhaseHealthy:
		ready := apimeta.FindStatusCondition(st.Conditions, meta.ReadyCondition)
		if st.CandidateTemplateHash == "" && st.ObservedGeneration == d.Generation && ready != nil && ready.Status == metav1.ConditionTrue {
			return healthyVerdict
		}
	}
	return pending
}

func newStatusCommand(o *options) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status NAME --timeout D",
		Short: "Wait for the Delivery: exit 0 when it is healthy, 1 when it is rejected or failed, 2 when the timeout passes first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.cluster()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			deadline := time.Now().Add(timeout)
			last := ""
			for {
				d, err := c.delivery(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if line := describeProgress(d); line != last {
					fmt.Fprintln(out, "►", line)
					last = line
				}
				switch judge(d) {
				case healthyVerdict:
					fmt.Fprintf(out, "✔ Delivery %s/%s is healthy: template %s is stable\n", d.Namespace, d.Name, d.Status.StableTemplateHash)
					return nil
				case rejected:
					return &exitError{code: 1, err: fmt.Errorf("Delivery %s/%s is %s: %s", d.Namespace, d.Name, d.Status.Phase, readyMessage(d))}
				}
				if !time.Now().Before(deadline) {
					what := string(d.Status.Phase)
					if d.Status.PendingPromotionBranch != "" {
						what += fmt.Sprintf(", waiting for the merge of %s (sluice approve %s)", d.Status.PendingPromotionBranch, d.Name)
					}
					return &exitError{code: 2, err: fmt.Errorf("Delivery %s/%s is not healthy after %s: %s", d.Namespace, d.Name, timeout, what)}
				}
				select {
				case <-cmd.Context().Done():
					return &exitError{code: 2, err: fmt.Errorf("interrupted: Delivery %s/%s is %s", d.Namespace, d.Name, d.Status.Phase)}
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	return cmd
}
