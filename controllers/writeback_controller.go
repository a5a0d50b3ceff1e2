package controllers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"text/template"
	"time"
	"unicode/utf8"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	fluxevents "github.com/fluxcd/pkg/runtime/events"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

// Labels kustomize-controller puts on what it applies.
const (
	kustomizationNameLabel      = "kustomize.toolkit.fluxcd.io/name"
	kustomizationNamespaceLabel = "kustomize.toolkit.fluxcd.io/namespace"
)

// WriteBackGit is what the write-back controller needs from Git.
type WriteBackGit interface {
	gitops.Writer
	PruneBranches(ctx context.Context, src gitops.Source, owned func(message string) bool, keep string, protect ...string) ([]string, error)
}

// WriteBackReconciler writes a Delivery's promotion state back to the Git
// source of the Kustomization that applied it: the new stable template when
// a rollout completes, the rejection when Argo aborts (and the revert of the
// Deployment's images with rollback: revert), and a promotion branch whose
// merge approves a manual gate.
type WriteBackReconciler struct {
	client.Client
	// APIReader reads AnalysisRuns straight from the API server.
	APIReader      client.Reader
	EventRecorder  fluxevents.Recorder
	Git            WriteBackGit
	ControllerName string
	// Shard says which Deliveries are this instance's; all when empty.
	Shard Shard

	// parked remembers, by Delivery, the Kustomization revision and
	// Delivery generation at which Git was last found parking it, so that
	// the check reads Git once per revision rather than at every reconcile.
	parked sync.Map
	// parking lets one park check of a Kustomization be made at a time.
	parking objectLocks
	// stable remembers, by Delivery, the stable template pushed for it and
	// the Kustomization revision applied then (see stableSettled).
	stable sync.Map
	// settling remembers how long each GitRepository's stable records
	// have waited for the rollouts still under way.
	settling stableSettles
	// fluxBusy holds, by GitRepository, the stable records' wait for
	// Flux to start applying its revision with all its Kustomizations.
	fluxBusy fluxWaits
	// sources lets one stable-record batch of a GitRepository be made at
	// a time.
	sources objectLocks
	// recent remembers the Secrets read a moment ago.
	recent recentReads
}

// SetupWithManager reconciles a Delivery whenever it changes, status
// included, when its policy (and so its Git settings) changes, and when the
// Kustomization that applies it applies a new revision (which may have lost
// the Deployment's parking). It relies on the Delivery controller's index of
// Deliveries by policy.
func (r *WriteBackReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&deliveryv1.Delivery{}, builder.WithPredicates(writeBackInputChanged)).
		Watches(&deliveryv1.DeliveryPolicy{},
			handler.EnqueueRequestsFromMapFunc(deliveriesReferring(r.Client, policyIndexKey))).
		Watches(&kustomizev1.Kustomization{},
			handler.EnqueueRequestsFromMapFunc(r.deliveriesAppliedBy),
			builder.WithPredicates(appliedChanged)).
		Named("write-back").
		Complete(r)
}

// writeBackInputChanged passes the Delivery updates that change what the
// write-back reads: its spec, labels, annotations (the adoption mark, a
// reconcile request) or deletion, and the part of its status that says what
// Git is owed. A Delivery's status changes a dozen times in a rollout,
// mostly weights and condition messages that leave nothing new to write.
var writeBackInputChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, okOld := e.ObjectOld.(*deliveryv1.Delivery)
		n, okNew := e.ObjectNew.(*deliveryv1.Delivery)
		return !okOld || !okNew || writeBackInput(o) != writeBackInput(n) ||
			!maps.Equal(o.Labels, n.Labels) || !maps.Equal(o.Annotations, n.Annotations)
	},
}

// writeBackView is what of a Delivery's generation, deletion and status
// the write-back's decisions depend on.
type writeBackView struct {
	generation, observedGeneration int64
	deleting                       bool
	phase                          deliveryv1.DeliveryPhase
	step                           int32
	stable, candidate, pending     string
	promoted, gitWriteBack         metav1.Condition
}

func writeBackInput(d *deliveryv1.Delivery) writeBackView {
	v := writeBackView{
		generation:         d.Generation,
		observedGeneration: d.Status.ObservedGeneration,
		deleting:           !d.DeletionTimestamp.IsZero(),
		phase:              d.Status.Phase,
		step:               ptr.Deref(d.Status.CurrentStep, -1),
		stable:             d.Status.StableTemplateHash,
		candidate:          d.Status.CandidateTemplateHash,
		pending:            d.Status.PendingPromotionBranch,
	}
	// A rejection's message is written to Git; the progress messages,
	// times and generations of conditions are not.
	if c := conditions.Get(d, deliveryv1.PromotedCondition); c != nil {
		v.promoted = metav1.Condition{Status: c.Status, Reason: c.Reason}
		if c.Reason == deliveryv1.RejectedReason {
			v.promoted.Message = c.Message
		}
	}
	if c := conditions.Get(d, deliveryv1.GitWriteBackCondition); c != nil {
		v.gitWriteBack = metav1.Condition{Status: c.Status, Reason: c.Reason}
	}
	return v
}

// deliveriesAppliedBy maps a Kustomization to the Deliveries it applied.
func (r *WriteBackReconciler) deliveriesAppliedBy(ctx context.Context, ks client.Object) []reconcile.Request {
	var list deliveryv1.DeliveryList
	if err := r.List(ctx, &list, client.MatchingLabels{
		kustomizationNameLabel: ks.GetName(), kustomizationNamespaceLabel: ks.GetNamespace(),
	}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing the Deliveries of a Kustomization")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, d := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&d)})
	}
	return reqs
}

// Reconcile writes what the Delivery's status says and Git does not yet.
func (r *WriteBackReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := &deliveryv1.Delivery{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.parked.Delete(req.NamespacedName)
			r.stable.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !obj.DeletionTimestamp.IsZero() || obj.Spec.Suspend || obj.Status.ObservedGeneration == 0 && obj.Status.Phase == "" {
		return ctrl.Result{}, nil
	}
	if owned, err := r.Shard.Owns(ctx, obj); err != nil || !owned {
		return ctrl.Result{}, err
	}
	ks, err := appliedBy(ctx, r.Client, obj)
	if err != nil || ks == nil {
		return ctrl.Result{}, err
	}
	if !inInventory(ks, obj) {
		// Labels anyone may write; the inventory only Flux writes. Flux
		// lists what it applied right after applying it, before its
		// health checks, and the new inventory brings the Delivery back.
		if conditions.IsReconciling(ks) {
			return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
		}
		r.EventRecorder.Eventf(obj, nil, corev1.EventTypeWarning, notInInventoryReason, "WriteBack",
			"Kustomization %s/%s, which the Delivery's labels name, did not apply it: sluice writes to Git only through the Kustomization whose inventory lists the Delivery", ks.Namespace, ks.Name)
		return ctrl.Result{}, nil
	}
	if quiet, after := r.nothingToWrite(ctx, obj, ks); quiet {
		return ctrl.Result{RequeueAfter: after}, nil
	}
	policy, err := resolvePolicy(ctx, r.Client, obj)
	if err != nil {
		// The Delivery controller reports a missing or invalid policy.
		return ctrl.Result{}, nil
	}
	source, err := resolveGitSource(ctx, r.recent.reader(r.Client), ks)
	if errors.Is(err, errSourceSuspended) {
		// Nothing is written and nothing requested of Flux until the
		// source is resumed; a resumed Kustomization is watched, a
		// GitRepository's resumption looked for again later.
		ctrl.LoggerFrom(ctx).Info("not writing to a suspended source", "reason", err.Error())
		return ctrl.Result{RequeueAfter: time.Minute}, nil
	}
	var settings gitSettings
	if err == nil {
		settings, err = source.settingsFor(ctx, r.recent.reader(r.Client), obj.Namespace, policy)
	}
	var wait time.Duration
	if err == nil {
		w := writeBack{r: r, obj: obj, source: source, policy: policy, git: settings}
		wait, err = w.run(ctx)
	}
	var reason, msg string
	switch {
	case errors.Is(err, errSourceNotWritable):
		reason, msg = deliveryv1.GitSourceNotWritableReason, err.Error()
	case errors.Is(err, errCredentialsUnavailable):
		reason, msg = deliveryv1.GitCredentialsUnavailableReason, err.Error()
	case errors.Is(err, gitops.ErrInsecureCredentials):
		reason, msg = deliveryv1.GitInsecureTransportReason, err.Error()
	case errors.Is(err, gitops.ErrPushRefused):
		reason, msg = deliveryv1.GitPushRefusedReason,
			fmt.Sprintf("%v; give sluice credentials that may push with spec.git.push.secretRef of the DeliveryPolicy", err)
	case errors.Is(err, gitops.ErrCannotEdit):
		reason, msg = deliveryv1.GitCannotEditReason, err.Error()
	case errors.Is(err, gitops.ErrConflict):
		reason, msg = deliveryv1.GitConflictReason, err.Error()
	case errors.Is(err, gitops.ErrUnreachable):
		// Nothing for the user to change, but something to know; looked
		// at again soon rather than after a growing backoff, so that
		// records catch up soon after the host is back.
		r.EventRecorder.Eventf(obj, nil, corev1.EventTypeWarning, gitUnreachableReason, "WriteBack",
			"%v; sluice tries again in %s", err, unreachableRetry)
		ctrl.LoggerFrom(ctx).Error(err, "writing the promotion state to Git")
		return ctrl.Result{RequeueAfter: unreachableRetry}, nil
	case err != nil:
		return ctrl.Result{}, err
	}
	if reason != "" {
		// Retrying at once does not help: the user must change something,
		// and the Delivery controller reports it as Stalled. A Secret or
		// RoleBinding may appear without an event sluice watches, so
		// missing credentials are looked for again after a while.
		r.EventRecorder.Eventf(obj, nil, corev1.EventTypeWarning, reason, "WriteBack", "%s", msg)
		if reason == deliveryv1.GitCannotEditReason || reason == deliveryv1.GitSourceNotWritableReason {
			// What to change is in the Kustomization's repository or
			// source: say it where Flux users look.
			r.EventRecorder.Eventf(ks, nil, corev1.EventTypeWarning, reason, "WriteBack", "Delivery %s/%s: %s", obj.Namespace, obj.Name, msg)
		}
		var result ctrl.Result
		switch reason {
		case deliveryv1.GitCredentialsUnavailableReason:
			result.RequeueAfter = time.Minute
		case deliveryv1.GitConflictReason:
			// Others moved the branch through every retry: the race is
			// over by the next try, which nothing else may bring.
			result.RequeueAfter = conflictRetry
		}
		return result, r.setWriteBack(ctx, obj, metav1.ConditionFalse, reason, msg)
	}
	if c := conditions.Get(obj, deliveryv1.GitWriteBackCondition); c != nil && c.Status == metav1.ConditionFalse {
		return ctrl.Result{RequeueAfter: wait}, r.setWriteBack(ctx, obj, metav1.ConditionTrue, meta.SucceededReason, "sluice writes to Git again")
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// setWriteBack records whether writing to Git works, for the Delivery
// controller to report as Stalled when it does not.
func (r *WriteBackReconciler) setWriteBack(ctx context.Context, obj *deliveryv1.Delivery, status metav1.ConditionStatus, reason, msg string) error {
	// The optimistic lock keeps this patch from writing back conditions
	// the Delivery controller changed meanwhile.
	patch := client.MergeFromWithOptions(obj.DeepCopy(), client.MergeFromWithOptimisticLock{})
	conditions.Set(obj, &metav1.Condition{Type: deliveryv1.GitWriteBackCondition, Status: status, Reason: reason, Message: msg})
	return r.Status().Patch(ctx, obj, patch, client.FieldOwner(r.ControllerName))
}

// gitUnreachableReason: the repository could not be fetched or pushed to;
// sluice tries again after unreachableRetry.
const gitUnreachableReason = "GitUnreachable"

const unreachableRetry = 30 * time.Second

// conflictRetry is when a write that lost every race for its branch is
// tried again.
const conflictRetry = 10 * time.Second

// notInInventoryReason: the Kustomization a Delivery's labels name does not
// list it; nothing is written for it.
const notInInventoryReason = "NotInInventory"

// appliedBy returns the Kustomization that applied the Delivery, as its
// labels name it, or nil when it was not applied by Flux or the
// Kustomization is gone.
func appliedBy(ctx context.Context, c client.Reader, obj *deliveryv1.Delivery) (*kustomizev1.Kustomization, error) {
	name, ns := obj.Labels[kustomizationNameLabel], obj.Labels[kustomizationNamespaceLabel]
	if name == "" || ns == "" {
		return nil, nil
	}
	ks := &kustomizev1.Kustomization{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ks); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return ks, nil
}

type writeBack struct {
	r      *WriteBackReconciler
	obj    *deliveryv1.Delivery
	source *gitSource
	policy *deliveryv1.DeliveryPolicySpec
	git    gitSettings
}

// run writes what the Delivery needs written, and says when to look again
// if the write waits for others.
func (w writeBack) run(ctx context.Context) (time.Duration, error) {
	obj, st := w.obj, w.obj.Status
	spec := obj.Spec.Promotion
	now := &metav1.Time{Time: time.Now().UTC().Truncate(time.Second)}

	// The promotion branch the Delivery needs now, if any.
	keep := ""
	gate := ptr.Deref(st.CurrentStep, 0)
	if st.Phase == deliveryv1.PhaseWaitingForApproval && st.CandidateTemplateHash != "" {
		if ok, _ := approvalFor(obj, st.CandidateTemplateHash, gate); !ok {
			keep = w.branchName(fmt.Sprint(gate), st.CandidateTemplateHash)
		}
	}
	// A promotion branch sluice pushed that no longer applies (the
	// candidate was promoted, superseded or rejected) goes, with any other
	// of the Delivery's that no longer applies.
	if pending := st.PendingPromotionBranch; pending != "" && pending != keep {
		if err := w.pruneBranches(ctx, keep); err != nil {
			return 0, err
		}
	}

	recorded := stableRecorded(obj)
	switch {
	// NOTE: with the stable template recorded, the write only checks that
	// Git still parks the Deployment (recorded by an older sluice, or the
	// zero removed since) and pushes nothing when it does. Git is the only
	// place to look: Flux does not apply a value the cluster already has,
	// so the Deployment's managed fields do not say what Git holds.
	case st.Phase == deliveryv1.PhaseHealthy && st.StableTemplateHash != "" && !recorded:
		return w.recordStable(ctx, now)

	case st.Phase == deliveryv1.PhaseHealthy && st.StableTemplateHash != "" && w.parkCheckDue(ctx):
		// Recorded before Git parked Deployments, or Git lost it since:
		// only the parking is written, if any is missing.
		return 0, w.checkParked(ctx, now)

	// NOTE: only a status that has observed the spec: when a person
	// removes the rejection to retry the candidate, the status still says
	// Rejected until the Delivery controller has retried it.
	case st.Phase == deliveryv1.PhaseRejected && st.CandidateTemplateHash != "" && st.ObservedGeneration == obj.Generation &&
		conditions.GetReason(obj, deliveryv1.PromotedCondition) == deliveryv1.RejectedReason &&
		(spec.Rejection == nil || spec.Rejection.TemplateHash != st.CandidateTemplateHash):
		reason := conditions.GetMessage(obj, deliveryv1.PromotedCondition)
		p := gitops.Promotion{Rejection: &deliveryv1.Rejection{
			TemplateHash: st.CandidateTemplateHash, Reason: truncate(reason, 1000), RejectedAt: now,
		}}
		if w.policy.Git.Rollback == deliveryv1.RollbackRevert && spec.Stable != nil {
			p.Revert = spec.Stable.Images
		}
		// The candidate's approval branch, if a crash kept it from being
		// recorded as pending, goes before the rejection that ends it
		// (see recordStable).
		if st.PendingPromotionBranch == "" && mayHaveApprovalBranches(obj) {
			if err := w.pruneBranches(ctx, ""); err != nil {
				return 0, err
			}
		}
		if err := w.write(ctx, w.git.branch, "reject", st.CandidateTemplateHash, nil,
			fmt.Sprintf("Reject %s/%s: template %s\n\n%s", obj.Namespace, obj.Name, st.CandidateTemplateHash, reason),
			w.policy.Git.Commit.MessageTemplates.Rejection, p); err != nil {
			return 0, err
		}

	case keep != "" && keep != st.PendingPromotionBranch:
		step := gate
		images, err := w.rolloutImages(ctx)
		if err != nil {
			return 0, err
		}
		msg := fmt.Sprintf("Approve %s/%s: template %s at step %d\n\nMerge this branch to let the candidate past its manual gate.\nImages: %s\nStable: %s\nWeight: %d%%\nAnalysis so far: %s",
			obj.Namespace, obj.Name, st.CandidateTemplateHash, step, gitops.FormatImages(images), st.StableTemplateHash,
			ptr.Deref(st.CanaryWeight, 0), w.analysisSoFar(ctx))
		if err := w.write(ctx, keep, "approve", st.CandidateTemplateHash, &step, msg,
			w.policy.Git.Commit.MessageTemplates.Approval,
			gitops.Promotion{Approval: &deliveryv1.Approval{TemplateHash: st.CandidateTemplateHash, Step: step, ApprovedAt: now}}); err != nil {
			return 0, err
		}
		w.r.EventRecorder.Eventf(obj, nil, corev1.EventTypeNormal, deliveryv1.WaitingForApprovalReason, "WriteBack", "%s", approvalRequest(st.CandidateTemplateHash, &step, keep, w.git.branch))
	}

	return 0, nil
}

// parkKey is what a park check found parked: the Kustomization's applied
// revision and the Delivery's generation.
func parkKey(d *deliveryv1.Delivery, ks *kustomizev1.Kustomization) string {
	return fmt.Sprintf("%s@%d", ks.Status.LastAppliedRevision, d.Generation)
}

// parkCheckDue tells whether Git must be read to see that it still parks
// the Delivery's Deployment: not since the last check found it parked at
// the same revision and generation, and only for a Deployment it can park.
func (w writeBack) parkCheckDue(ctx context.Context) bool {
	return w.r.parkCheckDue(ctx, w.obj, w.source.ks)
}

func (r *WriteBackReconciler) parkCheckDue(ctx context.Context, obj *deliveryv1.Delivery, ks *kustomizev1.Kustomization) bool {
	if last, ok := r.parked.Load(client.ObjectKeyFromObject(obj)); ok && last == parkKey(obj, ks) {
		return false
	}
	return r.parkable(ctx, obj, ks)
}

// parkable tells whether the Delivery's Deployment is applied by the same
// Kustomization, so that Git's Deployment can be parked with the Delivery,
// and is not being handed back.
func (r *WriteBackReconciler) parkable(ctx context.Context, obj *deliveryv1.Delivery, ks *kustomizev1.Kustomization) bool {
	deployment := &appsv1.Deployment{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: obj.Spec.DeploymentRef.Name}, deployment); err != nil {
		return false
	}
	return deployment.Labels[kustomizationNameLabel] == ks.Name &&
		deployment.Labels[kustomizationNamespaceLabel] == ks.Namespace &&
		!optingOut(obj, deployment)
}

// nothingToWrite tells, from the Delivery's status and what sluice
// remembers, that the write-back has nothing to write or delete now: no
// promotion branch pending, no gate waiting for one, no rejection, the
// stable template recorded and its parking checked at the Kustomization's
// revision, and no failure to clear. Most reconciles of a fleet are such,
// and read neither the GitRepository nor its Secret. after says when to
// look again, if the write only waits.
func (r *WriteBackReconciler) nothingToWrite(ctx context.Context, obj *deliveryv1.Delivery, ks *kustomizev1.Kustomization) (_ bool, after time.Duration) {
	st := obj.Status
	if st.PendingPromotionBranch != "" || conditions.IsFalse(obj, deliveryv1.GitWriteBackCondition) {
		return false, 0
	}
	switch st.Phase {
	case deliveryv1.PhaseWaitingForApproval, deliveryv1.PhaseRejected:
		return false, 0
	case deliveryv1.PhaseHealthy:
		if st.StableTemplateHash == "" {
			return true, 0
		}
		if !stableRecorded(obj) {
			// Pushed and not yet applied by Flux, or waiting with the
			// GitRepository's other records.
			if r.stableWritten(obj, ks) {
				return true, 0
			}
			if wait := r.settling.recentWait(sourceOf(ks), time.Now()); wait > 0 {
				return true, wait
			}
			return false, 0
		}
		if !r.parkCheckDue(ctx, obj, ks) {
			return true, 0
		}
		// NOTE: while Flux applies a revision, its Deliveries change one
		// by one and the Kustomization still names the last revision: a
		// check now would be one of several for the same revision. The
		// applied revision brings every Delivery back (see
		// SetupWithManager); the wait covers an apply that fails.
		if conditions.IsReconciling(ks) {
			return true, parkCheckRetry
		}
		return false, 0
	}
	return true, 0
}

// parkCheckRetry is when a park check held back while Flux applies the
// Kustomization looks again.
const parkCheckRetry = 30 * time.Second

// pruneBranches deletes the Delivery's promotion branches other than keep
// and forgets the pending one.
func (w writeBack) pruneBranches(ctx context.Context, keep string) error {
	// NOTE: only the branches whose head is an approval sluice pushed for
	// this Delivery: a branch template's prefix may name people's
	// branches and other Deliveries' too.
	deliveryTrailer := fmt.Sprintf("\n%s: %s/%s\n", TrailerDelivery, w.obj.Namespace, w.obj.Name)
	approveTrailer := fmt.Sprintf("\n%s: approve\n", TrailerAction)
	owned := func(message string) bool {
		message = "\n" + message + "\n"
		return strings.Contains(message, deliveryTrailer) && strings.Contains(message, approveTrailer)
	}
	deleted, err := w.r.Git.PruneBranches(ctx, w.git.src, owned, keep, w.git.branch, w.source.branch)
	if err != nil {
		return err
	}
	if len(deleted) > 0 {
		w.r.EventRecorder.Eventf(w.obj, nil, corev1.EventTypeNormal, "PromotionBranchDeleted", "WriteBack",
			"deleted promotion branches that no longer apply: %s", strings.Join(deleted, ", "))
	}
	// NOTE: the write-back alone writes the promotion branch and the last
	// commit; a merge patch of them alone needs no optimistic lock, and a
	// conflict with the Delivery controller's conditions cannot fail it.
	patch := client.MergeFrom(w.obj.DeepCopy())
	w.obj.Status.PendingPromotionBranch = ""
	return w.r.Status().Patch(ctx, w.obj, patch, client.FieldOwner(w.r.ControllerName))
}

// branchName renders the policy's promotion branch template.
func (w writeBack) branchName(step, hash string) string {
	tmpl := w.policy.Git.Push.PromotionBranchTemplate
	if tmpl == "" {
		tmpl = "sluice/promote/{{.Namespace}}/{{.Name}}/{{.Step}}-{{.Hash}}"
	}
	var b bytes.Buffer
	t, err := template.New("branch").Option("missingkey=error").Parse(tmpl)
	if err == nil {
		err = t.Execute(&b, map[string]string{"Namespace": w.obj.Namespace, "Name": w.obj.Name, "Step": step, "Hash": hash})
	}
	if err == nil {
		err = gitops.ValidBranch(b.String())
	}
	if err != nil || b.String() == w.source.branch || b.String() == w.git.branch {
		// Admission checks the template; what it renders for this
		// Delivery may still be no branch name, or the tracked one.
		return fmt.Sprintf("sluice/promote/%s/%s/%s-%s", w.obj.Namespace, w.obj.Name, step, hash)
	}
	return b.String()
}

// write pushes one promotion-state commit and asks Flux to apply it.
func (w writeBack) write(ctx context.Context, branch, action, hash string, step *int32,
	defaultMessage, messageTemplate string, p gitops.Promotion) error {

	change, err := w.change(ctx, branch, action, hash, step, defaultMessage, messageTemplate, p)
	if err != nil {
		return err
	}
	res, err := w.r.Git.Write(ctx, w.git.src, change)
	if err != nil {
		return fmt.Errorf("writing the %s of %s/%s to Git: %w", action, w.obj.Namespace, w.obj.Name, err)
	}
	pushed, err := w.written(ctx, branch, action, res)
	if err != nil || branch != w.git.branch {
		return err
	}
	settles := action == "promote" || action == "reject"
	if !pushed && !settles {
		return nil
	}
	// NOTE: a record Git holds already but the cluster does not was
	// pushed by a sluice that stopped before asking Flux to fetch it.
	if err := w.source.requestReconcile(ctx, w.r.Client); err != nil {
		return err
	}
	// NOTE: also when Git held the record already: the sluice that pushed
	// it may have stopped before deleting the candidate's approval branch.
	if settles {
		// The candidate's fate is in Git: any approval branch of its is
		// stale, the one a crash kept from being recorded as pending too.
		return w.pruneBranches(ctx, "")
	}
	return nil
}

// change prepares the commit that records p for the Delivery on branch.
func (w writeBack) change(ctx context.Context, branch, action, hash string, step *int32,
	defaultMessage, messageTemplate string, p gitops.Promotion) (gitops.Change, error) {

	obj := w.obj
	var err error
	if p.Kustomization, err = w.source.kustomization(ctx, w.r.Client); err != nil {
		return gitops.Change{}, err
	}
	p.Delivery = gitops.ObjectID{Kind: deliveryv1.DeliveryKind, Namespace: obj.Namespace, Name: obj.Name}
	p.Deployment = gitops.ObjectID{Kind: "Deployment", Namespace: obj.Namespace, Name: obj.Spec.DeploymentRef.Name}

	message, err := commitMessage(action, messageTemplate, defaultMessage,
		map[string]any{"Delivery": obj, "Hash": hash, "Step": step, "Action": action})
	if err != nil {
		return gitops.Change{}, err
	}
	message += trailers(client.ObjectKeyFromObject(obj), action, hash, step)

	return gitops.Change{
		Branch:     branch,
		From:       w.git.branch,
		Message:    message,
		Author:     w.git.author,
		Edit:       func(root string) (bool, error) { return gitops.RecordPromotion(root, p) },
		SigningKey: w.git.signingKey,
		Passphrase: w.git.passphrase,
	}, nil
}

// written records in the Delivery's status and events what a write of
// its pushed, and tells whether it pushed anything.
func (w writeBack) written(ctx context.Context, branch, action string, res gitops.Result) (bool, error) {
	obj := w.obj
	if !res.Pushed {
		if action == "approve" && obj.Status.PendingPromotionBranch != branch {
			// The branch says the approval already: pushed before a
			// crash or a status conflict kept it from being recorded.
			patch := client.MergeFrom(obj.DeepCopy())
			obj.Status.PendingPromotionBranch = branch
			return false, w.r.Status().Patch(ctx, obj, patch, client.FieldOwner(w.r.ControllerName))
		}
		return false, nil
	}
	w.r.EventRecorder.Eventf(obj, nil, corev1.EventTypeNormal, "GitCommitPushed", "WriteBack",
		"pushed %s to %s: %s", res.Commit[:12], branch, action)
	patch := client.MergeFrom(obj.DeepCopy())
	obj.Status.LastPushedCommit = res.Commit
	if action == "approve" {
		obj.Status.PendingPromotionBranch = branch
	}
	return true, w.r.Status().Patch(ctx, obj, patch, client.FieldOwner(w.r.ControllerName))
}

// rolloutImages returns the images of the Delivery's Rollout's template.
func (w writeBack) rolloutImages(ctx context.Context) ([]deliveryv1.ContainerImage, error) {
	rollout := &rolloutsv1.Rollout{}
	if err := w.r.Get(ctx, client.ObjectKeyFromObject(w.obj), rollout); err != nil {
		return nil, err
	}
	var out []deliveryv1.ContainerImage
	for _, c := range append(rollout.Spec.Template.Spec.InitContainers, rollout.Spec.Template.Spec.Containers...) {
		out = append(out, deliveryv1.ContainerImage{Name: c.Name, Image: c.Image})
	}
	return out, nil
}

// truncate cuts s to at most n bytes, never inside a UTF-8 character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// analysisSoFar summarises the AnalysisRuns of the Rollout's current
// template: each run's phase and its metrics' phases.
func (w writeBack) analysisSoFar(ctx context.Context) string {
	rollout := &rolloutsv1.Rollout{}
	if err := w.r.Get(ctx, client.ObjectKeyFromObject(w.obj), rollout); err != nil {
		return "unknown"
	}
	var runs rolloutsv1.AnalysisRunList
	if err := w.r.APIReader.List(ctx, &runs, client.InNamespace(w.obj.Namespace),
		client.MatchingLabels{rolloutsv1.DefaultRolloutUniqueLabelKey: rollout.Status.CurrentPodHash}); err != nil {
		return "unknown"
	}
	var parts []string
	for _, run := range runs.Items {
		if !metav1.IsControlledBy(&run, rollout) {
			continue
		}
		var metrics []string
		for _, m := range run.Status.MetricResults {
			metrics = append(metrics, fmt.Sprintf("%s %s", m.Name, m.Phase))
		}
		parts = append(parts, fmt.Sprintf("%s %s (%s)", run.Name, run.Status.Phase, strings.Join(metrics, ", ")))
	}
	if len(parts) == 0 {
		return "none"
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
