package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/controllers"
	"github.com/sluice-dev/sluice/gitops"
)

// writeFlags are the flags of the commands that commit.
type writeFlags struct {
	timeout time.Duration
	noWait  bool
}

func (f *writeFlags) add(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&f.timeout, "timeout", 5*time.Minute, "how long to wait for Flux to apply the commit and for the Delivery to follow")
	cmd.Flags().BoolVar(&f.noWait, "no-wait", false, "push the commit and return, without asking Flux to apply it now")
}

// edit is what a command commits, knowing the Delivery, where it comes from
// and how Flux builds it.
type edit func(ctx context.Context, d *deliveryv1.Delivery, k gitops.Kustomization, w *workspace) (string, error)

// write runs the commands that commit: it makes the commit as the user,
// pushes it, asks Flux to apply it, and returns the Delivery, source and
// commit.
func (o *options) write(ctx context.Context, out io.Writer, name string, f writeFlags,
	check func(d *deliveryv1.Delivery) error, e edit) (*cluster, *deliveryv1.Delivery, string, error) {
	c, err := o.cluster()
	if err != nil {
		return nil, nil, "", err
	}
	d, err := c.delivery(ctx, name)
	if err != nil {
		return nil, nil, "", err
	}
	if err := check(d); err != nil {
		return nil, nil, "", err
	}
	s, err := c.sourceOf(ctx, d)
	if err != nil {
		return nil, nil, "", err
	}
	t, err := o.target(s)
	if err != nil {
		return nil, nil, "", err
	}
	k, err := c.kustomization(ctx, s)
	if err != nil {
		return nil, nil, "", err
	}
	commit, err := o.commit(ctx, t, change{edit: func(ctx context.Context, w *workspace) (string, error) { return e(ctx, d, k, w) }})
	if err != nil {
		return nil, nil, "", err
	}
	if commit == "" {
		fmt.Fprintf(out, "✔ branch %s of %s says it already: nothing to commit\n", t.branch, t)
		return c, d, "", nil
	}
	fmt.Fprintf(out, "✔ pushed %s to branch %s of %s as %s <%s>\n", commit[:12], t.branch, t, t.author.Name, t.author.Email)
	if f.noWait {
		return c, d, commit, nil
	}
	if err := c.reconcileSource(ctx, s, commit, f.timeout, func(msg string) { fmt.Fprintln(out, "►", msg) }); err != nil {
		return c, d, commit, err
	}
	return c, d, commit, nil
}

func newApproveCommand(o *options) *cobra.Command {
	var f writeFlags
	cmd := &cobra.Command{
		Use:   "approve NAME",
		Short: "Merge the Delivery's promotion branch as yourself, push it, and follow the canary to its next gate",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			var gateHash string
			var gateStep int32
			var branch string
			c, d, commit, err := o.write(cmd.Context(), out, args[0], f,
				func(d *deliveryv1.Delivery) error {
					branch = d.Status.PendingPromotionBranch
					if branch == "" {
						return fmt.Errorf("Delivery %s/%s waits at no gate (phase %s): there is no promotion branch to merge", d.Namespace, d.Name, d.Status.Phase)
					}
					return nil
				},
				func(ctx context.Context, d *deliveryv1.Delivery, k gitops.Kustomization, w *workspace) (string, error) {
					msg, hash, step, err := mergePromotion(ctx, d, k, w, branch)
					gateHash, gateStep = hash, step
					return msg, err
				})
			if errors.Is(err, errPushRefused) {
				return &exitError{code: 3, err: fmt.Errorf("%w\nthe branch may be protected: merge %s into it with a pull request%s", err, branch, pullRequestHint(o, branch))}
			}
			if err != nil || f.noWait || (commit == "" && gateHash == "") {
				return err
			}
			_, err = follow(cmd.Context(), c, d, gateHash, gateStep, f.timeout, out)
			return err
		},
	}
	f.add(cmd)
	return cmd
}

// pullRequestHint says where to open a pull request, for hosts whose
// address for it is known.
func pullRequestHint(o *options, branch string) string {
	raw := o.git.url
	if o.git.repo != "" {
		if clone, err := git.PlainOpenWithOptions(o.git.repo, &git.PlainOpenOptions{DetectDotGit: true}); err == nil {
			if r, err := clone.Remote("origin"); err == nil {
				raw = r.Config().URLs[0]
			}
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	u.User = nil
	repo := strings.TrimSuffix(strings.Trim(u.Path, "/"), ".git")
	switch {
	case strings.Contains(u.Host, "github"):
		return fmt.Sprintf(": https://%s/%s/compare/%s?expand=1", u.Host, repo, strings.ReplaceAll(url.PathEscape(branch), "%2F", "/"))
	case strings.Contains(u.Host, "gitlab"):
		return fmt.Sprintf(": https://%s/%s/-/merge_requests/new?merge_request[source_branch]=%s", u.Host, repo, url.QueryEscape(branch))
	}
	return ""
}

// mergePromotion merges the promotion branch into the checkout: a merge
// commit of the branch's head and the tracked branch's, whose tree is the
// branch's when the tracked branch has not moved since, and the tracked
// branch's with the same approval recorded otherwise.
func mergePromotion(ctx context.Context, d *deliveryv1.Delivery, k gitops.Kustomization, w *workspace, branch string) (string, string, int32, error) {
	promotion, err := w.fetchBranch(ctx, branch)
	if err != nil {
		return "", "", 0, fmt.Errorf("%w (approved or superseded meanwhile? run sluice get %s)", err, d.Name)
	}
	tr := parseTrailers(promotion.Message)
	if tr[controllers.TrailerDelivery] != d.Namespace+"/"+d.Name || tr[controllers.TrailerAction] != "approve" {
		return "", "", 0, fmt.Errorf("the head of branch %s is not sluice's approval of Delivery %s/%s; merge it by hand if you mean to", branch, d.Namespace, d.Name)
	}
	hash := tr[controllers.TrailerTemplateHash]
	var step int32
	if _, err := fmt.Sscan(tr[controllers.TrailerStep], &step); err != nil || hash == "" {
		return "", "", 0, fmt.Errorf("the approval at the head of branch %s names no template and step", branch)
	}
	if merged, err := promotion.IsAncestor(w.head); err != nil {
		return "", "", 0, err
	} else if merged {
		return "", hash, step, nil
	}
	fastForward, err := w.head.IsAncestor(promotion)
	if err != nil {
		return "", "", 0, err
	}
	if fastForward {
		wt, err := w.repo.Worktree()
		if err != nil {
			return "", "", 0, err
		}
		if err := wt.Reset(&git.ResetOptions{Commit: promotion.Hash, Mode: git.HardReset}); err != nil {
			return "", "", 0, err
		}
	} else {
		delivery, deployment := ids(d)
		changed, err := gitops.RecordPromotion(w.dir, gitops.Promotion{Kustomization: k, Delivery: delivery, Deployment: deployment,
			Approval: &deliveryv1.Approval{TemplateHash: hash, Step: step, ApprovedAt: &metav1.Time{Time: time.Now().UTC().Truncate(time.Second)}}})
		if err != nil {
			return "", "", 0, err
		}
		if !changed {
			return "", hash, step, nil
		}
	}
	w.parents = []plumbing.Hash{w.head.Hash, promotion.Hash}
	msg := fmt.Sprintf("Merge %s: approve %s/%s at step %d\n\n%s approves template %s of Delivery %s/%s at step %d.",
		branch, d.Namespace, d.Name, step, w.author.Name, hash, d.Namespace, d.Name, step)
	if body := bodyOf(promotion.Message); body != "" {
		msg += "\n\n" + body
	}
	return msg + trailers(d, "approve", hash, &step), hash, step, nil
}

// follow prints the Delivery's progress after the gate at step of template
// hash until it is healthy, rejected, failed or waits at another gate.
func follow(ctx context.Context, c *cluster, d *deliveryv1.Delivery, hash string, step int32, timeout time.Duration, out io.Writer) (*deliveryv1.Delivery, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		cur, err := c.delivery(ctx, d.Name)
		if err == nil {
			st := cur.Status
			line := describeProgress(cur)
			if line != last {
				fmt.Fprintln(out, "►", line)
				last = line
			}
			atGate := st.Phase == deliveryv1.PhaseWaitingForApproval && st.CandidateTemplateHash == hash && st.CurrentStep != nil && *st.CurrentStep == step
			switch {
			case st.Phase == deliveryv1.PhaseHealthy && st.CandidateTemplateHash == "":
				fmt.Fprintf(out, "✔ Delivery %s/%s is healthy: template %s is stable\n", cur.Namespace, cur.Name, st.StableTemplateHash)
				return cur, nil
			case st.Phase == deliveryv1.PhaseWaitingForApproval && !atGate:
				fmt.Fprintf(out, "✔ Delivery %s/%s waits at its next gate, step %d: approve it with sluice approve %s\n", cur.Namespace, cur.Name, ptrValue(st.CurrentStep), cur.Name)
				return cur, nil
			case st.Phase == deliveryv1.PhaseRejected || st.Phase == deliveryv1.PhaseFailed:
				return cur, &exitError{code: 1, err: fmt.Errorf("Delivery %s/%s is %s: %s", cur.Namespace, cur.Name, st.Phase, readyMessage(cur))}
			}
		}
		select {
		case <-ctx.Done():
			return nil, &exitError{code: 2, err: fmt.Errorf("Delivery %s/%s did not reach its next gate within %s (%s)", d.Namespace, d.Name, timeout, last)}
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func describeProgress(d *deliveryv1.Delivery) string {
	st := d.Status
	s := string(st.Phase)
	if st.CurrentStep != nil {
		s += fmt.Sprintf(", step %d", *st.CurrentStep)
	}
	if st.CanaryWeight != nil {
		s += fmt.Sprintf(", weight %d", *st.CanaryWeight)
	}
	if m := readyMessage(d); m != "" {
		s += ": " + m
	}
	return s
}

func readyMessage(d *deliveryv1.Delivery) string {
	for _, c := range d.Status.Conditions {
		if c.Type == "Ready" {
			return oneLine(c.Message)
		}
	}
	return ""
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

func newAbortCommand(o *options) *cobra.Command {
	var f writeFlags
	var reason string
	var revert bool
	cmd := &cobra.Command{
		Use:   "abort NAME --reason TEXT [--revert]",
		Short: "Reject the candidate in Git (spec.promotion.rejection), and with --revert put the stable images back in the Deployment",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return errors.New("say why with --reason: it is recorded in the rejection and the commit")
			}
			_, _, _, err := o.write(cmd.Context(), cmd.OutOrStdout(), args[0], f,
				func(d *deliveryv1.Delivery) error {
					if d.Status.CandidateTemplateHash == "" {
						return fmt.Errorf("Delivery %s/%s releases no candidate (phase %s): there is nothing to abort", d.Namespace, d.Name, d.Status.Phase)
					}
					if revert && d.Spec.Promotion.Stable == nil {
						return fmt.Errorf("Delivery %s/%s records no stable template in Git: there are no images to revert to", d.Namespace, d.Name)
					}
					return nil
				},
				func(_ context.Context, d *deliveryv1.Delivery, k gitops.Kustomization, w *workspace) (string, error) {
					hash := d.Status.CandidateTemplateHash
					delivery, deployment := ids(d)
					p := gitops.Promotion{Kustomization: k, Delivery: delivery, Deployment: deployment,
						Rejection: &deliveryv1.Rejection{TemplateHash: hash, Reason: "aborted by " + w.author.Name + ": " + truncate(reason, 900),
							RejectedAt: &metav1.Time{Time: time.Now().UTC().Truncate(time.Second)}}}
					msg := fmt.Sprintf("Reject %s/%s: template %s\n\n%s aborts the release: %s", d.Namespace, d.Name, hash, w.author.Name, reason)
					if revert {
						p.Revert = d.Spec.Promotion.Stable.Images
						msg += fmt.Sprintf("\n\nThe Deployment runs the stable images again: %s", gitops.FormatImages(p.Revert))
					}
					changed, err := gitops.RecordPromotion(w.dir, p)
					if err != nil || !changed {
						return "", err
					}
					return msg + trailers(d, "reject", hash, nil), nil
				})
			return err
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the candidate is rejected (required)")
	cmd.Flags().BoolVar(&revert, "revert", false, "also set the Deployment's images back to the stable ones in the same commit")
	f.add(cmd)
	return cmd
}

func newRetryCommand(o *options) *cobra.Command {
	var f writeFlags
	cmd := &cobra.Command{
		Use:   "retry NAME",
		Short: "Remove the Delivery's rejection from Git, so that sluice releases the rejected template again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, _, _, err := o.write(cmd.Context(), cmd.OutOrStdout(), args[0], f,
				func(d *deliveryv1.Delivery) error {
					if d.Spec.Promotion.Rejection == nil {
						return fmt.Errorf("Delivery %s/%s records no rejection: there is nothing to retry", d.Namespace, d.Name)
					}
					return nil
				},
				func(_ context.Context, d *deliveryv1.Delivery, k gitops.Kustomization, w *workspace) (string, error) {
					delivery, deployment := ids(d)
					changed, err := gitops.EditDelivery(w.dir, gitops.DeliveryEdit{Kustomization: k, Delivery: delivery, Deployment: deployment, ClearRejection: true})
					if err != nil || !changed {
						return "", err
					}
					hash := d.Spec.Promotion.Rejection.TemplateHash
					return fmt.Sprintf("Retry %s/%s: template %s\n\n%s removes the rejection of template %s: sluice releases it again when the Deployment runs it.",
						d.Namespace, d.Name, hash, w.author.Name, hash) + trailers(d, "retry", hash, nil), nil
				})
			return err
		},
	}
	f.add(cmd)
	return cmd
}

func newSuspendCommand(o *options, suspend bool) *cobra.Command {
	var f writeFlags
	verb, what := "resume", "Clear spec.suspend of the Delivery in Git: sluice steers it again"
	if suspend {
		verb, what = "suspend", "Set spec.suspend of the Delivery in Git: sluice leaves it and what it runs as they are"
	}
	cmd := &cobra.Command{
		Use:   verb + " NAME",
		Short: what,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, _, _, err := o.write(cmd.Context(), cmd.OutOrStdout(), args[0], f,
				func(*deliveryv1.Delivery) error { return nil },
				func(_ context.Context, d *deliveryv1.Delivery, k gitops.Kustomization, w *workspace) (string, error) {
					delivery, deployment := ids(d)
					changed, err := gitops.EditDelivery(w.dir, gitops.DeliveryEdit{Kustomization: k, Delivery: delivery, Deployment: deployment, Suspend: &suspend})
					if err != nil || !changed {
						return "", err
					}
					title := "Resume"
					if suspend {
						title = "Suspend"
					}
					return fmt.Sprintf("%s %s/%s\n\n%s sets spec.suspend of the Delivery to %t.", title, d.Namespace, d.Name, w.author.Name, suspend) +
						trailers(d, verb, "", nil), nil
				})
			return err
		},
	}
	f.add(cmd)
	return cmd
}

func newRollbackCommand(o *options) *cobra.Command {
	var f writeFlags
	var to string
	cmd := &cobra.Command{
		Use:   "rollback NAME [--to HASH|REVISION]",
		Short: "Put the images of a stable template recorded in Git back in the Deployment: the recorded stable, or an earlier one",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, _, _, err := o.write(cmd.Context(), cmd.OutOrStdout(), args[0], f,
				func(d *deliveryv1.Delivery) error {
					if to == "" && d.Spec.Promotion.Stable == nil {
						return fmt.Errorf("Delivery %s/%s records no stable template in Git: there is nothing to roll back to", d.Namespace, d.Name)
					}
					return nil
				},
				func(_ context.Context, d *deliveryv1.Delivery, k gitops.Kustomization, w *workspace) (string, error) {
					stable := d.Spec.Promotion.Stable
					if to != "" {
						var err error
						if stable, err = recordedStable(w, d, k, to); err != nil {
							return "", err
						}
					}
					delivery, deployment := ids(d)
					changed, err := gitops.EditDelivery(w.dir, gitops.DeliveryEdit{Kustomization: k, Delivery: delivery, Deployment: deployment, Images: stable.Images})
					if err != nil || !changed {
						return "", err
					}
					msg := fmt.Sprintf("Roll back %s/%s to template %s\n\n%s puts the images of stable template %s back in the Deployment: %s",
						d.Namespace, d.Name, stable.TemplateHash, w.author.Name, stable.TemplateHash, gitops.FormatImages(stable.Images))
					if stable.Revision != "" {
						msg += fmt.Sprintf("\n\nIt was promoted at revision %s.", stable.Revision)
					}
					return msg + trailers(d, "rollback", stable.TemplateHash, nil), nil
				})
			return err
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "a template hash, or a Git revision (commit or branch@sha1:commit) at which Git records the stable template to go back to (see sluice history)")
	f.add(cmd)
	return cmd
}

// recordedStable finds the stable template to that Git recorded for the
// Delivery: the promotion of that template hash, or the stable record of
// the Delivery at that revision.
func recordedStable(w *workspace, d *deliveryv1.Delivery, k gitops.Kustomization, to string) (*deliveryv1.StableRelease, error) {
	rev := to
	if _, after, ok := strings.Cut(to, "sha1:"); ok {
		rev = after
	}
	var at *object.Commit
	iter, err := w.repo.Log(&git.LogOptions{From: w.head.Hash})
	if err != nil {
		return nil, err
	}
	key := d.Namespace + "/" + d.Name
	_ = iter.ForEach(func(c *object.Commit) error {
		if len(rev) >= 7 && strings.HasPrefix(c.Hash.String(), rev) {
			at = c
			return errStop
		}
		// A promotion may share its commit with others' records.
		for _, change := range changesOf(c.Message) {
			tr := parseTrailers(change)
			if tr[controllers.TrailerDelivery] == key && tr[controllers.TrailerAction] == "promote" && tr[controllers.TrailerTemplateHash] == to {
				at = c
				return errStop
			}
		}
		return nil
	})
	if at == nil {
		return nil, fmt.Errorf("branch %s has no promotion of template %s and no commit %s for Delivery %s/%s; sluice history %s lists them", w.branch, to, rev, d.Namespace, d.Name, d.Name)
	}
	wt, err := w.repo.Worktree()
	if err != nil {
		return nil, err
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: at.Hash, Force: true}); err != nil {
		return nil, err
	}
	delivery, _ := ids(d)
	recorded, err := gitops.BuiltDelivery(w.dir, k, delivery)
	if err == nil && recorded == nil {
		err = fmt.Errorf("commit %s does not hold Delivery %s/%s", at.Hash.String()[:12], d.Namespace, d.Name)
	}
	if err == nil && recorded.Spec.Promotion.Stable == nil {
		err = fmt.Errorf("Git records no stable template for Delivery %s/%s at commit %s", d.Namespace, d.Name, at.Hash.String()[:12])
	}
	// Back to the branch's head, where the edit goes.
	if cerr := wt.Checkout(&git.CheckoutOptions{Branch: plumbing.NewBranchReferenceName(w.branch), Force: true}); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return recorded.Spec.Promotion.Stable, nil
}

var errStop = errors.New("stop")

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
