package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/diff"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/controllers"
)

// templateHashAnnotation carries, on the Rollout's pod template, sluice's
// hash of the Deployment template it runs.
const templateHashAnnotation = "delivery.sluice.dev/template-hash"

// node is an object of the tree: its kind, name, status and what else is
// worth a glance.
type node struct {
	kind, name, status, info string
	children                 []*node
}

func (n *node) add(c ...*node) *node { n.children = append(n.children, c...); return n }

// renderTree prints the tree as `kubectl argo rollouts get rollout` does:
// names indented with ├──/└── in the first column, then kind, status and
// info, aligned.
func renderTree(out io.Writer, root *node) error {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tKIND\tSTATUS\tINFO")
	var walk func(n *node, prefix, childPrefix string)
	walk = func(n *node, prefix, childPrefix string) {
		fmt.Fprintf(w, "%s%s\t%s\t%s\t%s\n", prefix, n.name, n.kind, n.status, n.info)
		for i, c := range n.children {
			if i == len(n.children)-1 {
				walk(c, childPrefix+"└──", childPrefix+"   ")
			} else {
				walk(c, childPrefix+"├──", childPrefix+"│  ")
			}
		}
	}
	walk(root, "", "")
	if err := w.Flush(); err != nil {
		return err
	}
	// The blanks empty last cells leave at the ends of lines go.
	lines := strings.Split(b.String(), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	_, err := io.WriteString(out, strings.Join(lines, "\n"))
	return err
}

func newTreeCommand(o *options) *cobra.Command {
	var watch bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "tree NAME [-w]",
		Short: "Show the Delivery down to its Rollout, ReplicaSets, pods and AnalysisRuns, and up to its Kustomization, GitRepository and the commit of its candidate",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.cluster()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			if !watch {
				root, err := o.tree(ctx, c, args[0])
				if err != nil {
					return err
				}
				return renderTree(out, root)
			}
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			return redraw(ctx, out, time.Second, func() (string, error) {
				root, err := o.tree(ctx, c, args[0])
				if err != nil {
					return "", err
				}
				var b strings.Builder
				err = renderTree(&b, root)
				return b.String(), err
			})
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "draw the tree again in place whenever it changes, until interrupted")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --watch, stop after this long (0: until interrupted)")
	return cmd
}

// redraw prints what draw returns, and whenever it changes, moves the
// cursor back up over it and prints it again, as `kubectl argo rollouts get
// --watch` does, until ctx ends.
func redraw(ctx context.Context, out io.Writer, every time.Duration, draw func() (string, error)) error {
	last := ""
	for {
		s, err := draw()
		if err != nil && ctx.Err() == nil {
			s = fmt.Sprintf("✗ %v\n", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if s != last {
			if n := strings.Count(last, "\n"); n > 0 {
				// Up to where the last drawing began, and clear below.
				fmt.Fprintf(out, "\x1b[%dA\x1b[J", n)
			}
			fmt.Fprint(out, s)
			last = s
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// tree reads the Delivery and what runs it and what applies it.
func (o *options) tree(ctx context.Context, c *cluster, name string) (*node, error) {
	d, err := c.delivery(ctx, name)
	if err != nil {
		return nil, err
	}
	root := &node{kind: "Delivery", name: d.Name, status: deliveryStatus(d), info: deliveryInfo(d)}

	// Up: what applies it.
	if s, err := c.sourceOf(ctx, d); s != nil && s.ks != nil {
		info := "applied " + orDash(s.ks.Status.LastAppliedRevision)
		if attempted := s.ks.Status.LastAttemptedRevision; attempted != "" && attempted != s.ks.Status.LastAppliedRevision {
			info = "applying " + attempted
		}
		ks := &node{kind: "Kustomization", name: s.ks.Namespace + "/" + s.ks.Name, status: statusOf(s.ks.Status.Conditions, ""), info: info}
		root.add(ks)
		if s.repo != nil {
			repo := &node{kind: "GitRepository", name: s.repo.Namespace + "/" + s.repo.Name, status: statusOf(s.repo.Status.Conditions, ""),
				info: "fetched " + orDash(artifactRevision(s.repo))}
			ks.add(repo)
			if commit := o.candidateCommit(ctx, c, d, s); commit != nil {
				repo.add(commit)
			}
		} else if err != nil {
			ks.add(&node{kind: "GitRepository", name: "?", status: "✗", info: err.Error()})
		}
	}

	// Down: what runs it.
	ro := &rolloutsv1.Rollout{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: d.Namespace, Name: d.Name}, ro); err != nil {
		root.add(&node{kind: "Rollout", name: d.Name, status: "✗ absent", info: err.Error()})
		return root, nil
	}
	rollout := &node{kind: "Rollout", name: ro.Name, status: rolloutStatus(ro), info: rolloutInfo(ro)}
	root.add(rollout)

	var sets appsv1.ReplicaSetList
	if err := c.List(ctx, &sets, client.InNamespace(d.Namespace)); err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(d.Namespace)); err != nil {
		return nil, err
	}
	var runs rolloutsv1.AnalysisRunList
	if err := c.List(ctx, &runs, client.InNamespace(d.Namespace)); err != nil {
		return nil, err
	}
	owned := slices.DeleteFunc(sets.Items, func(rs appsv1.ReplicaSet) bool { return !ownedBy(rs.OwnerReferences, ro.UID) })
	// Newest revision first, as Argo Rollouts lists them.
	slices.SortFunc(owned, func(a, b appsv1.ReplicaSet) int {
		return strings.Compare(b.Annotations["rollout.argoproj.io/revision"]+"|"+b.Name, a.Annotations["rollout.argoproj.io/revision"]+"|"+a.Name)
	})
	for _, rs := range owned {
		rollout.add(replicaSetNode(ro, &rs, pods.Items))
	}
	ownedRuns := slices.DeleteFunc(runs.Items, func(r rolloutsv1.AnalysisRun) bool { return !ownedBy(r.OwnerReferences, ro.UID) })
	slices.SortFunc(ownedRuns, func(a, b rolloutsv1.AnalysisRun) int { return b.CreationTimestamp.Compare(a.CreationTimestamp.Time) })
	for _, run := range ownedRuns {
		rollout.add(analysisRunNode(&run))
	}
	return root, nil
}

func ownedBy(refs []metav1.OwnerReference, uid types.UID) bool {
	for _, r := range refs {
		if r.UID == uid {
			return true
		}
	}
	return false
}

// statusOf is the Ready condition of conditions, with a mark, after phase.
func statusOf(conds []metav1.Condition, phase string) string {
	mark := "◌"
	if c := apimeta.FindStatusCondition(conds, meta.ReadyCondition); c != nil {
		switch c.Status {
		case metav1.ConditionTrue:
			mark = "✔"
		case metav1.ConditionFalse:
			mark = "✖"
		}
		if phase == "" {
			phase = "Ready=" + string(c.Status)
		}
	}
	if phase == "" {
		phase = "Unknown"
	}
	return mark + " " + phase
}

// deliveryStatus is the Delivery's phase, marked as Argo Rollouts marks
// a Rollout's.
func deliveryStatus(d *deliveryv1.Delivery) string {
	phase := d.Status.Phase
	if phase == "" {
		phase = deliveryv1.PhasePending
	}
	mark := map[deliveryv1.DeliveryPhase]string{
		deliveryv1.PhaseHealthy: "✔", deliveryv1.PhaseWaitingForApproval: "॥",
		deliveryv1.PhaseRejected: "✖", deliveryv1.PhaseFailed: "✖",
	}[phase]
	if mark == "" {
		mark = "◌"
	}
	return mark + " " + string(phase)
}

func deliveryInfo(d *deliveryv1.Delivery) string {
	var parts []string
	st := d.Status
	if st.CurrentStep != nil {
		parts = append(parts, fmt.Sprintf("step %d", *st.CurrentStep))
	}
	if st.CanaryWeight != nil {
		parts = append(parts, fmt.Sprintf("weight %d", *st.CanaryWeight))
	}
	if st.StableTemplateHash != "" {
		parts = append(parts, "stable "+st.StableTemplateHash)
	}
	if st.CandidateTemplateHash != "" {
		parts = append(parts, "candidate "+st.CandidateTemplateHash)
	}
	if st.PendingPromotionBranch != "" {
		parts = append(parts, "merge "+st.PendingPromotionBranch+" to approve")
	}
	if d.Spec.Suspend {
		parts = append(parts, "suspended")
	}
	if r := d.Spec.Promotion.Rejection; r != nil {
		parts = append(parts, "rejected "+r.TemplateHash)
	}
	return strings.Join(parts, ", ")
}

func rolloutStatus(ro *rolloutsv1.Rollout) string {
	phase := string(ro.Status.Phase)
	mark := map[string]string{"Healthy": "✔", "Progressing": "◌", "Paused": "॥", "Degraded": "✖"}[phase]
	if ro.Status.Abort {
		phase, mark = "Aborted", "✖"
	}
	if mark == "" {
		mark = "◌"
	}
	return strings.TrimSpace(mark + " " + phase)
}

func rolloutInfo(ro *rolloutsv1.Rollout) string {
	parts := []string{}
	if ro.Status.CurrentStepIndex != nil && ro.Spec.Strategy.Canary != nil {
		parts = append(parts, fmt.Sprintf("step %d/%d", *ro.Status.CurrentStepIndex, len(ro.Spec.Strategy.Canary.Steps)))
	}
	if w := ro.Status.Canary.Weights; w != nil {
		parts = append(parts, fmt.Sprintf("canary weight %d", w.Canary.Weight))
	}
	parts = append(parts, fmt.Sprintf("ready %d/%d", ro.Status.ReadyReplicas, ro.Status.Replicas))
	if ro.Status.Message != "" {
		parts = append(parts, oneLine(ro.Status.Message))
	}
	return strings.Join(parts, ", ")
}

func replicaSetNode(ro *rolloutsv1.Rollout, rs *appsv1.ReplicaSet, pods []corev1.Pod) *node {
	hash := rs.Labels[rolloutsv1.DefaultRolloutUniqueLabelKey]
	var roles []string
	switch hash {
	case ro.Status.StableRS:
		roles = append(roles, "stable")
	case ro.Status.CurrentPodHash:
		roles = append(roles, "canary")
	}
	if rev := rs.Annotations["rollout.argoproj.io/revision"]; rev != "" {
		roles = append(roles, "revision "+rev)
	}
	if h := rs.Spec.Template.Annotations[templateHashAnnotation]; h != "" {
		roles = append(roles, "template "+h)
	}
	var images []string
	for _, ctr := range rs.Spec.Template.Spec.Containers {
		images = append(images, ctr.Image)
	}
	roles = append(roles, strings.Join(images, ","))
	status := "✔ Healthy"
	want := int32(0)
	if rs.Spec.Replicas != nil {
		want = *rs.Spec.Replicas
	}
	switch {
	case want == 0:
		status = "• ScaledDown"
	case rs.Status.ReadyReplicas < want:
		status = "◌ Progressing"
	}
	n := &node{kind: "ReplicaSet", name: rs.Name, status: status, info: strings.Join(roles, ", ")}
	for _, p := range pods {
		if !ownedBy(p.OwnerReferences, rs.UID) {
			continue
		}
		ready, total := 0, len(p.Status.ContainerStatuses)
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Ready {
				ready++
			}
		}
		mark := "◌"
		if p.Status.Phase == corev1.PodRunning && ready == total && total > 0 {
			mark = "✔"
		}
		if p.DeletionTimestamp != nil {
			mark = "◌ Terminating,"
		}
		n.add(&node{kind: "Pod", name: p.Name, status: mark + " " + string(p.Status.Phase), info: fmt.Sprintf("ready %d/%d", ready, total)})
	}
	return n
}

func analysisRunNode(run *rolloutsv1.AnalysisRun) *node {
	mark := map[rolloutsv1.AnalysisPhase]string{
		rolloutsv1.AnalysisPhaseSuccessful: "✔", rolloutsv1.AnalysisPhaseFailed: "✖", rolloutsv1.AnalysisPhaseError: "⚠",
		rolloutsv1.AnalysisPhaseInconclusive: "?",
	}[run.Status.Phase]
	if mark == "" {
		mark = "◌"
	}
	phase := string(run.Status.Phase)
	if phase == "" {
		phase = "Pending"
	}
	n := &node{kind: "AnalysisRun", name: run.Name, status: mark + " " + phase, info: oneLine(run.Status.Message)}
	for _, m := range run.Status.MetricResults {
		n.add(&node{kind: "Metric", name: m.Name, status: string(m.Phase), info: measurements(m)})
	}
	return n
}

// measurements lists a metric's measured values and its counts.
func measurements(m rolloutsv1.MetricResult) string {
	values := make([]string, 0, len(m.Measurements))
	for _, ms := range m.Measurements {
		v := ms.Value
		if v == "" {
			v = string(ms.Phase)
		}
		values = append(values, v)
	}
	s := fmt.Sprintf("[%s]", strings.Join(values, ", "))
	s += fmt.Sprintf(" ✔ %d", m.Successful)
	if m.Failed > 0 {
		s += fmt.Sprintf(" ✖ %d", m.Failed)
	}
	if m.Error > 0 {
		s += fmt.Sprintf(" ⚠ %d", m.Error)
	}
	return s
}

// candidateCommit finds, in the user's clone (--repo), the newest commit of
// the applied revision's history not made by sluice that brought in an
// image of the candidate, or of the stable template when there is no
// candidate.
func (o *options) candidateCommit(ctx context.Context, c *cluster, d *deliveryv1.Delivery, s *source) *node {
	if o.git.repo == "" {
		return nil
	}
	ro := &rolloutsv1.Rollout{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(d), ro); err != nil {
		return nil
	}
	var images []string
	for _, ctr := range ro.Spec.Template.Spec.Containers {
		images = append(images, ctr.Image)
	}
	repo, err := git.PlainOpenWithOptions(o.git.repo, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return nil
	}
	rev := s.ks.Status.LastAttemptedRevision
	if rev == "" {
		rev = s.ks.Status.LastAppliedRevision
	}
	_, sha, ok := strings.Cut(rev, "sha1:")
	if !ok {
		return nil
	}
	head, err := repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return &node{kind: "Commit", name: sha[:10], status: "?", info: "not in " + o.git.repo + " (git fetch)"}
	}
	key := sha + "|" + strings.Join(images, ",")
	if n, ok := o.commits[key]; ok {
		return n
	}
	if o.commits == nil {
		o.commits = map[string]*node{}
	}
	found := introducing(head, images, 200)
	if found == nil {
		o.commits[key] = nil
		return nil
	}
	what := "introduced the candidate"
	if d.Status.CandidateTemplateHash == "" {
		what = "introduced the stable template"
	}
	n := &node{kind: "Commit", name: found.Hash.String()[:10], status: found.Author.Name,
		info: fmt.Sprintf("%s: %q", what, subjectOf(found.Message))}
	// The watch asks again every second: a revision's history does not
	// change.
	o.commits[key] = n
	return n
}

// introducing walks the first parents from head and returns the newest
// commit without sluice's trailers whose change adds a line with one of
// images.
func introducing(head *object.Commit, images []string, limit int) *object.Commit {
	c := head
	for i := 0; c != nil && i < limit; i++ {
		if _, ours := parseTrailers(c.Message)[controllers.TrailerAction]; !ours && c.NumParents() > 0 {
			if parent, err := c.Parent(0); err == nil {
				if patch, err := parent.Patch(c); err == nil {
					for _, fp := range patch.FilePatches() {
						for _, chunk := range fp.Chunks() {
							if chunk.Type() != diff.Add {
								continue
							}
							for _, img := range images {
								if strings.Contains(chunk.Content(), img) {
									return c
								}
							}
						}
					}
				}
			}
		} else if c.NumParents() == 0 {
			// The first commit brought in what it holds.
			if holdsAny(c, images) {
				return c
			}
			return nil
		}
		p, err := c.Parent(0)
		if err != nil {
			return nil
		}
		c = p
	}
	return nil
}

// holdsAny tells whether a file of commit c holds one of images.
func holdsAny(c *object.Commit, images []string) bool {
	files, err := c.Files()
	if err != nil {
		return false
	}
	found := false
	_ = files.ForEach(func(f *object.File) error {
		content, err := f.Contents()
		if err != nil {
			return nil
		}
		for _, img := range images {
			if strings.Contains(content, img) {
				found = true
				return errStop
			}
		}
		return nil
	})
	return found
}
