package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/spf13/cobra"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

func newGetCommand(o *options) *cobra.Command {
	var watch bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "List Deliveries: phase, step, weight, templates, readiness and the promotion branch waiting to be merged",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.cluster()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if watch && timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			list := func() ([]deliveryv1.Delivery, error) {
				var l deliveryv1.DeliveryList
				var opts []client.ListOption
				if !o.allNamespaces {
					opts = append(opts, client.InNamespace(c.namespace))
				}
				if err := c.List(ctx, &l, opts...); err != nil {
					return nil, err
				}
				items := l.Items
				if len(args) == 1 {
					items = slices.DeleteFunc(items, func(d deliveryv1.Delivery) bool { return d.Name != args[0] })
				}
				return items, nil
			}
			items, err := list()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !watch {
				if len(items) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "✗ no Deliveries found")
					return nil
				}
				return printTable(out, o.allNamespaces, items)
			}
			return watchTable(ctx, out, o.allNamespaces, items, list)
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list the Deliveries of every namespace")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "after the list, print every Delivery again when it changes")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --watch, stop after this long (0: until interrupted)")
	return cmd
}

var tableHeader = []string{"NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANDIDATE", "SUSPENDED", "READY", "MESSAGE", "PROMOTION BRANCH"}

// row is a Delivery as a line of the table, as `flux get` prints objects.
func row(d *deliveryv1.Delivery, allNamespaces bool) []string {
	step, weight := "-", "-"
	if d.Status.CurrentStep != nil {
		step = fmt.Sprint(*d.Status.CurrentStep)
	}
	if d.Status.CanaryWeight != nil {
		weight = fmt.Sprint(*d.Status.CanaryWeight)
	}
	ready, message := "Unknown", "not reconciled yet"
	if c := apimeta.FindStatusCondition(d.Status.Conditions, meta.ReadyCondition); c != nil {
		ready, message = string(c.Status), c.Message
	}
	if d.Generation != d.Status.ObservedGeneration && d.Status.ObservedGeneration != 0 {
		message = "reconciling a new generation: " + message
	}
	phase := string(d.Status.Phase)
	if phase == "" {
		phase = string(deliveryv1.PhasePending)
	}
	r := []string{d.Name, phase, step, weight, orDash(d.Status.StableTemplateHash), orDash(d.Status.CandidateTemplateHash),
		fmt.Sprint(d.Spec.Suspend), ready, oneLine(message), orDash(d.Status.PendingPromotionBranch)}
	if allNamespaces {
		r = append([]string{d.Namespace}, r...)
	}
	return r
}

func header(allNamespaces bool) []string {
	if allNamespaces {
		return append([]string{"NAMESPACE"}, tableHeader...)
	}
	return tableHeader
}

// printTable prints the Deliveries as a table, columns aligned.
func printTable(out io.Writer, allNamespaces bool, items []deliveryv1.Delivery) error {
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, strings.Join(header(allNamespaces), "\t"))
	for i := range items {
		fmt.Fprintln(w, strings.Join(row(&items[i], allNamespaces), "\t"))
	}
	return w.Flush()
}

// watchTable prints the table, then a line for every Delivery whose line
// changes, as `flux get --watch` does, until ctx ends. Later lines keep
// the first table's columns, widened when a cell needs it.
func watchTable(ctx context.Context, out io.Writer, allNamespaces bool, items []deliveryv1.Delivery,
	list func() ([]deliveryv1.Delivery, error)) error {
	cols := columns{}
	rows := [][]string{header(allNamespaces)}
	seen := map[string]string{}
	for i := range items {
		r := row(&items[i], allNamespaces)
		rows = append(rows, r)
		seen[items[i].Namespace+"/"+items[i].Name] = strings.Join(r, "\t")
	}
	// The phase, template and readiness columns are as wide as their
	// widest values from the start, so that later lines keep them aligned.
	hash := strings.Repeat("0", deliveryv1.TemplateHashLength)
	widest := []string{"", "", string(deliveryv1.PhaseWaitingForApproval), "", "", hash, hash, "", "Unknown"}
	if !allNamespaces {
		widest = widest[1:]
	}
	for _, r := range append(rows, widest) {
		cols.fit(r)
	}
	for _, r := range rows {
		fmt.Fprintln(out, cols.line(r))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
		items, err := list()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for i := range items {
			r := row(&items[i], allNamespaces)
			key, line := items[i].Namespace+"/"+items[i].Name, strings.Join(r, "\t")
			if seen[key] == line {
				continue
			}
			seen[key] = line
			cols.fit(r)
			fmt.Fprintln(out, cols.line(r))
		}
	}
}

// columns are the widths of a table's columns, as tabwriter pads them.
type columns []int

func (c *columns) fit(cells []string) {
	for i, cell := range cells {
		if i >= len(*c) {
			*c = append(*c, 0)
		}
		(*c)[i] = max((*c)[i], utf8.RuneCountInString(cell))
	}
}

func (c columns) line(cells []string) string {
	var b strings.Builder
	for i, cell := range cells {
		b.WriteString(cell)
		if i < len(cells)-1 {
			b.WriteString(strings.Repeat(" ", c[i]-utf8.RuneCountInString(cell)+3))
		}
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps the first line of a message, for a table cell.
func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.ReplaceAll(s, "\t", " ")
}
