package controllers

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fluxevents "github.com/fluxcd/pkg/runtime/events"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

// Annotations that opt a Deployment into progressive delivery.
const (
	// StrategyAnnotation is canary or blue-green.
	StrategyAnnotation = "sluice.dev/strategy"
	// PolicyAnnotation names a DeliveryPolicy in the Deployment's
	// namespace; the strategy's built-in policy when absent.
	PolicyAnnotation = "sluice.dev/policy"
)

// Reasons of the events the discovery controller records.
const (
	adoptedReason           = "Adopted"
	adoptionFailedReason    = "AdoptionFailed"
	invalidStrategyReason   = "InvalidStrategy"
	optedOutReason          = "OptedOut"
	optOutFailedReason      = "OptOutFailed"
	sourceSuspendedReason   = "SourceSuspended"
	unknownAnnotationReason = "UnknownAnnotation"
)

// +kubebuilder:rbac:groups=delivery.sluice.dev,resources=deliveries,verbs=delete

// KustomizationReconciler finds annotated Deployments in the inventories of
// Flux Kustomizations and adopts them with a commit to the Kustomization's
// Git source.
type KustomizationReconciler struct {
	client.Client
	EventRecorder fluxevents.Recorder
	// Git writes to repositories.
	Git gitops.Writer
	// ControllerName is the field manager of what sluice applies.
	ControllerName string

	// waits holds, by GitRepository, the adoptions' wait for Flux to
	// apply its revision with all its Kustomizations.
	waits fluxWaits
	// pushed remembers, by Kustomization, the revision at which its
	// adoptions were written: until Flux attempts another, the Deliveries
	// are on their way.
	pushed sync.Map
	// gathering serializes, by GitRepository, the reconciles that write
	// the adoptions of all its Kustomizations.
	gathering objectLocks
	// recent remembers the Secrets read a moment ago.
	recent recentReads
}

// Adoptions wait for Flux to apply a revision with every Kustomization of
// its GitRepository, so that the adoptions of all of them go in one commit:
// for as long as Flux keeps finishing Kustomizations, at most
// adoptionBatchQuiet after the last and adoptionBatchLimit in all.
//
// NOTE: a second commit costs more than the wait: Flux applies every
// Kustomization of the GitRepository again for each, whatever it changed.
const (
	adoptionBatchQuiet = 30 * time.Second
	adoptionBatchLimit = 5 * time.Minute
	// adoptionPoll is how often one waiting Kustomization looks whether
	// the wait is over.
	adoptionPoll = 2 * time.Second
)

// SetupWithManager watches Kustomizations, where only a new applied
// revision or a changed inventory causes work, and the strategy annotation
// of the Deployments they apply: with wait: true, Flux records a revision as
// applied only once its health checks pass, and a stalled Delivery's would
// not, so the annotation's removal must be seen on the Deployment.
func (r *KustomizationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&kustomizev1.Kustomization{}, builder.WithPredicates(appliedChanged)).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(kustomizationOf),
			builder.WithPredicates(strategyChanged)).
		Named("kustomization-discovery").
		Complete(r)
}

// kustomizationOf maps an object Flux applied to its Kustomization.
func kustomizationOf(_ context.Context, obj client.Object) []reconcile.Request {
	name, ns := obj.GetLabels()[kustomizationNameLabel], obj.GetLabels()[kustomizationNamespaceLabel]
	if name == "" || ns == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
}

// strategyChanged passes the Deployment updates that add, change or remove
// the strategy annotation.
var strategyChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, okOld := e.ObjectOld.GetAnnotations()[StrategyAnnotation]
		n, okNew := e.ObjectNew.GetAnnotations()[StrategyAnnotation]
		return okOld != okNew || o != n
	},
}

var appliedChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, okOld := e.ObjectOld.(*kustomizev1.Kustomization)
		n, okNew := e.ObjectNew.(*kustomizev1.Kustomization)
		if !okOld || !okNew {
			return false
		}
		// A resumed Kustomization gets what sluice held back while it
		// was suspended.
		return o.Status.LastAppliedRevision != n.Status.LastAppliedRevision || inventoryIDs(o) != inventoryIDs(n) ||
			o.Spec.Suspend && !n.Spec.Suspend
	},
}

func inventoryIDs(k *kustomizev1.Kustomization) string {
	if k.Status.Inventory == nil {
		return ""
	}
	ids := make([]string, 0, len(k.Status.Inventory.Entries))
	for _, e := range k.Status.Inventory.Entries {
		ids = append(ids, e.ID)
	}
	return strings.Join(ids, ",")
}

// Reconcile adopts the annotated Deployments of one Kustomization that have
// no Delivery yet.
func (r *KustomizationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	ks := &kustomizev1.Kustomization{}
	if err := r.Get(ctx, req.NamespacedName, ks); err != nil {
		if apierrors.IsNotFound(err) {
			r.pushed.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if ks.Status.Inventory == nil || ks.Status.LastAppliedRevision == "" {
		return ctrl.Result{}, nil
	}

	candidates, optOuts, err := r.scan(ctx, ks, r.warn)
	if err != nil || len(candidates)+len(optOuts) == 0 {
		return ctrl.Result{}, err
	}
	source, err := resolveGitSource(ctx, r.recent.reader(r.Client), ks)
	if err != nil {
		if errors.Is(err, errSourceSuspended) {
			// Nothing is written and nothing requested of Flux until the
			// Kustomization is resumed, which sluice watches; a
			// GitRepository's resumption is looked for again later.
			r.EventRecorder.Eventf(ks, nil, corev1.EventTypeNormal, sourceSuspendedReason, "Discover",
				"%d Deployment(s) to adopt or hand back wait: %v", len(candidates)+len(optOuts), err)
			return ctrl.Result{RequeueAfter: time.Minute}, nil
		}
		for _, c := range candidates {
			r.warn(c.deployment, adoptionFailedReason, fmt.Sprintf("cannot adopt through Kustomization %s/%s: %v", ks.Namespace, ks.Name, err))
		}
		for _, dl := range optOuts {
			r.warn(dl, optOutFailedReason, fmt.Sprintf("cannot hand back through Kustomization %s/%s: %v", ks.Namespace, ks.Name, err))
		}
		if errors.Is(err, errSourceNotWritable) {
			r.warn(ks, deliveryv1.GitSourceNotWritableReason, err.Error())
		}
		// A Secret or RoleBinding may appear without an event sluice
		// watches.
		if errors.Is(err, errCredentialsUnavailable) {
			return ctrl.Result{RequeueAfter: time.Minute}, nil
		}
		return ctrl.Result{}, nil
	}

	var (
		errs   []error
		result ctrl.Result
	)
	failed := func(obj client.Object, of *kustomizev1.Kustomization, reason string, err error) {
		log.Error(err, "writing to Git failed", "object", client.ObjectKeyFromObject(obj))
		r.warn(obj, reason, err.Error())
		if errors.Is(err, gitops.ErrCannotEdit) {
			r.warn(of, reason, err.Error())
		}
		switch {
		case errors.Is(err, gitops.ErrPushRefused):
			r.warn(obj, deliveryv1.GitPushRefusedReason, "give sluice credentials that may push with spec.git.push.secretRef of the DeliveryPolicy the Deployment names")
		case errors.Is(err, gitops.ErrInsecureCredentials):
			r.warn(ks, deliveryv1.GitInsecureTransportReason, err.Error())
		case !errors.Is(err, gitops.ErrCannotEdit):
			// Retrying helps only what a user need not change.
			errs = append(errs, err)
		}
	}
	for i := range candidates {
		candidates[i].source = source
	}
	if len(candidates) > 0 {
		// Held before the wait for Flux to apply the revision with the
		// GitRepository's other Kustomizations, so that the write that
		// ends it holds only the last ones'. One that fails here is held
		// again, and its error reported, when it is written.
		r.holdReplicas(ctx, candidates)
		unlock := r.gathering.lock(source.repo)
		defer unlock()
		var wait time.Duration
		candidates, wait, err = r.gather(ctx, source, candidates)
		switch {
		case err != nil:
			return ctrl.Result{}, err
		case wait > 0:
			result.RequeueAfter = wait
		}
		for i, err := range r.adopt(ctx, candidates) {
			if err != nil {
				failed(candidates[i].deployment, candidates[i].source.ks, adoptionFailedReason, err)
			}
		}
	}
	for _, dl := range optOuts {
		if err := r.optOut(ctx, source, dl); err != nil {
			failed(dl, ks, optOutFailedReason, err)
		}
	}
	return result, errors.Join(errs...)
}

// gather returns the adoptions to write now: none while Flux is still
// applying the GitRepository's revision with some of its Kustomizations,
// within adoptionBatchQuiet and adoptionBatchLimit (wait says when to look
// again); then the candidates of the Kustomization, with those of every
// other Kustomization of the GitRepository, for one commit.
func (r *KustomizationReconciler) gather(ctx context.Context, source *gitSource, candidates []candidate) ([]candidate, time.Duration, error) {
	if r.adoptionsPushed(source.ks) {
		// Written at this revision already, by this reconcile or
		// another's gathering: the Deliveries come with the revision
		// Flux applies next.
		candidates = nil
	}
	kss, err := kustomizationsOf(ctx, r.Client, source.repo)
	if err != nil {
		return nil, 0, err
	}
	now := time.Now()
	if wait := r.waits.wait(source.repo, kss, lastApplied, adoptionBatchQuiet, adoptionBatchLimit, now); wait > 0 {
		// NOTE: the Kustomization Flux finishes last brings its own
		// reconcile, which ends the wait, only when it has something to
		// adopt; one Kustomization looks again every adoptionPoll, and
		// the others of a fleet, which would each read the GitRepository
		// and its Secret at every look, only at the wait's deadline.
		if r.waits.polls(source.repo, source.ks, adoptionPoll, now) {
			wait = min(wait, adoptionPoll)
		}
		return nil, wait, nil
	}
	r.waits.done(source.repo)
	for _, other := range kss {
		if other.Name == source.ks.Name && other.Namespace == source.ks.Namespace ||
			other.Status.Inventory == nil || other.Status.LastAppliedRevision == "" || r.adoptionsPushed(other) {
			continue
		}
		// Its own reconcile reports what is wrong with its Deployments.
		more, _, err := r.scan(ctx, other, func(client.Object, string, string) {})
		if err != nil || len(more) == 0 {
			continue
		}
		// One source per Kustomization: its variables are resolved once,
		// and it is asked to reconcile once.
		otherSource := source.forKustomization(other.DeepCopy())
		for _, c := range more {
			c.source = otherSource
			candidates = append(candidates, c)
		}
	}
	return candidates, 0, nil
}

// adoptionsPushed tells whether the Kustomization's adoptions were written
// at the revision it attempted last.
//
// NOTE: not the revision it applied last: with wait: true, Flux records a
// revision as applied only once its health checks pass, and a canary
// waiting at a gate holds them for up to the Kustomization's timeout. The
// inventory of each revision Flux attempts meanwhile may list new
// Deployments to adopt.
func (r *KustomizationReconciler) adoptionsPushed(ks *kustomizev1.Kustomization) bool {
	v, ok := r.pushed.Load(types.NamespacedName{Namespace: ks.Namespace, Name: ks.Name})
	return ok && v == ks.Status.LastAttemptedRevision
}

// scan returns the annotated Deployments in the inventory that have no
// Delivery and whose annotations are valid (invalid ones get a warning
// event and are left alone), and the adopted Deliveries whose Deployments
// lost their strategy annotation.
func (r *KustomizationReconciler) scan(ctx context.Context, ks *kustomizev1.Kustomization, warn func(obj client.Object, reason, msg string)) (candidates []candidate, optOuts []*deliveryv1.Delivery, err error) {
	for _, e := range ks.Status.Inventory.Entries {
		// <namespace>_<name>_<group>_<kind>
		parts := strings.Split(e.ID, "_")
		if len(parts) != 4 || parts[2] != "apps" || parts[3] != "Deployment" {
			continue
		}
		d := &appsv1.Deployment{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: parts[0], Name: parts[1]}, d); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, nil, err
		}
		warnUnknownAnnotations(d, warn)
		delivery := &deliveryv1.Delivery{}
		err := r.Get(ctx, client.ObjectKeyFromObject(d), delivery)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, nil, err
		}
		strategy, annotated := d.Annotations[StrategyAnnotation]
		switch {
		case err == nil && !annotated && handingBack(ks, d, delivery):
			optOuts = append(optOuts, delivery)
			continue
		case err == nil || !annotated:
			continue
		}
		if strategy != deliveryv1.StrategyCanary && strategy != deliveryv1.StrategyBlueGreen {
			warn(d, invalidStrategyReason, fmt.Sprintf("annotation %s: %q is not a strategy; use canary or blue-green", StrategyAnnotation, strategy))
			continue
		}
		if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
			// NOTE: Recreate exists for apps whose old and new pods must
			// never run together (a ReadWriteOnce volume); a canary and a
			// blue-green run them together by design.
			warn(d, invalidStrategyReason, fmt.Sprintf("Deployment %s/%s replaces its pods with strategy Recreate, which never runs old and new pods together, and %s delivery does: switch it to RollingUpdate, or remove the %s annotation",
				d.Namespace, d.Name, strategy, StrategyAnnotation))
			continue
		}
		// The adoption is written with the Git settings of the policy the
		// Deployment names, or of the strategy's built-in policy.
		c := candidate{deployment: d, policy: builtinPolicy(&deliveryv1.Delivery{Spec: deliveryv1.DeliverySpec{
			Strategy: strategy, DeploymentRef: meta.LocalObjectReference{Name: d.Name}}})}
		if policy := d.Annotations[PolicyAnnotation]; policy != "" {
			// NOTE: what one Deployment's annotation says affects that
			// Deployment only, never the rest of the Kustomization.
			if msgs := validation.IsDNS1123Subdomain(policy); len(msgs) > 0 {
				warn(d, deliveryv1.InvalidPolicyReason, fmt.Sprintf("annotation %s: %q is not a DeliveryPolicy name: %s", PolicyAnnotation, policy, strings.Join(msgs, "; ")))
				continue
			}
			p := &deliveryv1.DeliveryPolicy{}
			if err := r.Get(ctx, client.ObjectKey{Namespace: d.Namespace, Name: policy}, p); err != nil {
				if apierrors.IsNotFound(err) {
					warn(d, deliveryv1.PolicyNotFoundReason, fmt.Sprintf("annotation %s: DeliveryPolicy %s not found in namespace %s", PolicyAnnotation, policy, d.Namespace))
				} else {
					warn(d, deliveryv1.InvalidPolicyReason, fmt.Sprintf("annotation %s: reading DeliveryPolicy %s: %v", PolicyAnnotation, policy, err))
				}
				continue
			}
			if p.Strategy() != strategy {
				warn(d, deliveryv1.InvalidPolicyReason, fmt.Sprintf("annotation %s is %s but DeliveryPolicy %s describes %s", StrategyAnnotation, strategy, policy, p.Strategy()))
				continue
			}
			c.policy = p.Spec
		}
		candidates = append(candidates, c)
	}
	return candidates, optOuts, nil
}

// warnUnknownAnnotations warns about the annotations of the Deployment in
// sluice's domain that sluice does not read, which are most likely a
// misspelt strategy or policy that would otherwise go unnoticed.
func warnUnknownAnnotations(d *appsv1.Deployment, warn func(obj client.Object, reason, msg string)) {
	for key := range d.Annotations {
		if strings.HasPrefix(key, "sluice.dev/") && key != StrategyAnnotation && key != PolicyAnnotation {
			warn(d, unknownAnnotationReason, fmt.Sprintf("annotation %s is not one sluice reads on a Deployment; use %s and %s",
				key, StrategyAnnotation, PolicyAnnotation))
		}
	}
}

// handingBack tells whether the Delivery is one an adoption wrote for the
// Deployment, applied by this Kustomization: removing the Deployment's
// strategy annotation then opts it out. A Delivery a user wrote stays
// until the user removes it.
func handingBack(ks *kustomizev1.Kustomization, d *appsv1.Deployment, delivery *deliveryv1.Delivery) bool {
	return delivery.Annotations[gitops.AdoptedAnnotation] == "true" &&
		delivery.Spec.DeploymentRef.Name == d.Name &&
		delivery.DeletionTimestamp.IsZero() &&
		delivery.Labels[kustomizationNameLabel] == ks.Name &&
		delivery.Labels[kustomizationNamespaceLabel] == ks.Namespace
}

// adopt pushes the adoption commit for one Deployment and asks Flux to
// apply it now.
// candidate is an annotated Deployment to adopt, with the policy it names.
type candidate struct {
	deployment *appsv1.Deployment
	policy     deliveryv1.DeliveryPolicySpec
	// source is the Git source of the Kustomization that applies the
	// Deployment.
	source *gitSource
	// held tells that sluice co-owns the Deployment's replicas.
	held bool
}

// holdConcurrency is how many Deployments' replicas holdReplicas holds at
// once.
const holdConcurrency = 8

// holdReplicas makes sluice a co-owner of the replicas of the candidates'
// Deployments, a few at a time, marks those it holds and returns each
// candidate's error.
//
// NOTE: the adoption commit moves replicas out of the Deployment. Flux
// applies with force, so a field no manager owns would fall back to 1:
// sluice must co-own spec.replicas before the commit lands. A fleet's
// first adoption holds a thousand Deployments; one at a time, the commit
// would wait for a thousand round trips to the API server.
func (r *KustomizationReconciler) holdReplicas(ctx context.Context, candidates []candidate) []error {
	errs := make([]error, len(candidates))
	slots := make(chan struct{}, holdConcurrency)
	var wg sync.WaitGroup
	for i := range candidates {
		c := &candidates[i]
		if c.held || ownsReplicas(c.deployment, r.ControllerName) {
			c.held = true
			continue
		}
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			if errs[i] = holdDeploymentReplicas(ctx, r.Client, r.ControllerName, c.deployment); errs[i] == nil {
				c.held = true
			}
		})
	}
	wg.Wait()
	return errs
}

// adopt pushes the adoptions of the candidates, all of one GitRepository,
// those that share a branch and credentials in one commit (a revision that adds a
// hundred annotated Deployments, to one Kustomization or to many, is one
// commit, not a hundred), asks Flux to apply it, and returns each
// candidate's error.
func (r *KustomizationReconciler) adopt(ctx context.Context, candidates []candidate) []error {
	errs := make([]error, len(candidates))
	type write struct {
		candidate int
		change    gitops.Change
		adopted   *gitops.Adopted
	}
	// One WriteAll per source (URL and credentials) the policies make.
	type group struct {
		src    gitops.Source
		writes []write
	}
	var groups []*group
	groupOf := func(src gitops.Source) *group {
		for _, g := range groups {
			if g.src.URL == src.URL && reflect.DeepEqual(g.src.Credentials, src.Credentials) {
				return g
			}
		}
		g := &group{src: src}
		groups = append(groups, g)
		return g
	}
	for i, err := range r.holdReplicas(ctx, candidates) {
		if err != nil {
			d := candidates[i].deployment
			errs[i] = fmt.Errorf("adopting Deployment %s/%s: %w", d.Namespace, d.Name, err)
		}
	}
	for i, c := range candidates {
		if errs[i] != nil {
			continue
		}
		src, change, adopted, err := r.adoption(ctx, c)
		if err != nil {
			errs[i] = fmt.Errorf("adopting Deployment %s/%s: %w", c.deployment.Namespace, c.deployment.Name, err)
			continue
		}
		g := groupOf(src)
		g.writes = append(g.writes, write{candidate: i, change: change, adopted: adopted})
	}
	var written []*gitSource
	// The adoptions each commit brought to each Kustomization, said in
	// one event there.
	type pushedTo struct {
		source *gitSource
		commit string
	}
	var pushed []pushedTo
	adoptedIn := map[pushedTo][]adoptedDeployment{}
	for _, g := range groups {
		changes := make([]gitops.Change, len(g.writes))
		for i, w := range g.writes {
			changes[i] = w.change
		}
		results, writeErrs := r.Git.WriteAll(ctx, g.src, changes)
		for i, w := range g.writes {
			c := candidates[w.candidate]
			d := c.deployment
			if err := writeErrs[i]; err != nil {
				errs[w.candidate] = fmt.Errorf("adopting Deployment %s/%s: %w", d.Namespace, d.Name, err)
				continue
			}
			if !slices.Contains(written, c.source) {
				written = append(written, c.source)
			}
			if results[i].Pushed {
				r.EventRecorder.Eventf(d, nil, corev1.EventTypeNormal, adoptedReason, "Adopt",
					"pushed %s: the Delivery is in %s", results[i].Commit[:12], w.adopted.DeliveryFile)
				key := pushedTo{source: c.source, commit: results[i].Commit}
				if _, ok := adoptedIn[key]; !ok {
					pushed = append(pushed, key)
				}
				adoptedIn[key] = append(adoptedIn[key], adoptedDeployment{key: client.ObjectKeyFromObject(d), file: w.adopted.DeliveryFile})
			}
		}
	}
	// Said on the Kustomization too, once per commit: Flux Alerts select
	// it, not Deployments, and each of its events sets a commit status.
	for _, p := range pushed {
		r.EventRecorder.Eventf(p.source.ks, nil, corev1.EventTypeNormal, adoptedReason, "Adopt",
			"%s", adoptedMessage(adoptedIn[p], p.commit))
	}
	// A Kustomization whose adoptions were all written waits for Flux.
	for _, source := range written {
		done := true
		for i, c := range candidates {
			if c.source == source && errs[i] != nil {
				done = false
			}
		}
		if done {
			r.pushed.Store(types.NamespacedName{Namespace: source.ks.Namespace, Name: source.ks.Name}, source.ks.Status.LastAttemptedRevision)
		}
	}
	// Flux applies what Git now says without waiting for its interval:
	// the GitRepository is asked once (the candidates are all of one).
	if len(written) > 0 {
		if err := written[0].requestReconcile(ctx, r.Client); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "requesting a reconcile after the adoptions")
		}
	}
	return errs
}

// adoptedDeployment is a Deployment an adoption commit adopted, and the
// file it put its Delivery in.
type adoptedDeployment struct {
	key  client.ObjectKey
	file string
}

// adoptedMessageNames is how many Deployments an Adopted event of a
// Kustomization names; it counts the others.
const adoptedMessageNames = 10

// adoptedMessage says what one commit adopted for one Kustomization.
func adoptedMessage(adopted []adoptedDeployment, commit string) string {
	if len(adopted) == 1 {
		return fmt.Sprintf("adopted Deployment %s: pushed %s, the Delivery is in %s", adopted[0].key, commit[:12], adopted[0].file)
	}
	names := make([]string, 0, adoptedMessageNames)
	for _, a := range adopted[:min(len(adopted), adoptedMessageNames)] {
		names = append(names, a.key.String())
	}
	list := strings.Join(names, ", ")
	if more := len(adopted) - len(names); more > 0 {
		list += fmt.Sprintf(" and %d more", more)
	}
	return fmt.Sprintf("adopted %d Deployments (%s): pushed %s, each Delivery in a file next to its Deployment's", len(adopted), list, commit[:12])
}

// adoption prepares the commit that adopts one candidate, and where it goes;
// sluice holds the candidate's replicas already (holdReplicas).
func (r *KustomizationReconciler) adoption(ctx context.Context, c candidate) (gitops.Source, gitops.Change, *gitops.Adopted, error) {
	d, policy, source := c.deployment, c.policy, c.source
	build, err := source.kustomization(ctx, r.Client)
	if err != nil {
		return gitops.Source{}, gitops.Change{}, nil, err
	}

	adoption := gitops.Adoption{
		Kustomization: build,
		Deployment:    gitops.ObjectID{Kind: "Deployment", Namespace: d.Namespace, Name: d.Name},
		Strategy:      d.Annotations[StrategyAnnotation],
		Policy:        d.Annotations[PolicyAnnotation],
		LiveReplicas:  ptr.Deref(d.Spec.Replicas, 1),
	}
	settings, err := source.settingsFor(ctx, r.recent.reader(r.Client), d.Namespace, &policy)
	if err != nil {
		return gitops.Source{}, gitops.Change{}, nil, err
	}
	adoption.Switched = switchedObjects(&policy)

	hash := deliveryv1.TemplateHash(&d.Spec.Template)
	message, err := commitMessage("adopt", policy.Git.Commit.MessageTemplates.Adoption, adoptionMessage(d, adoption),
		map[string]any{"Deployment": d, "Strategy": adoption.Strategy, "Policy": adoption.Policy, "Hash": hash, "Action": "adopt"})
	if err != nil {
		return gitops.Source{}, gitops.Change{}, nil, err
	}
	message += trailers(client.ObjectKeyFromObject(d), "adopt", hash, nil)

	adopted := &gitops.Adopted{}
	return settings.src, gitops.Change{
		Branch:     settings.branch,
		Message:    message,
		Author:     settings.author,
		SigningKey: settings.signingKey,
		Passphrase: settings.passphrase,
		Edit: func(root string) (bool, error) {
			var changed bool
			var err error
			*adopted, changed, err = gitops.Adopt(root, adoption)
			return changed, err
		},
	}, adopted, nil
}

// optOut pushes the commit that hands the Delivery's Deployment back: the
// Delivery leaves Git and the Deployment gets its replicas again. Flux then
// scales the Deployment up and prunes the Delivery, whose finalizer keeps
// the Rollout serving until the Deployment is available.
func (r *KustomizationReconciler) optOut(ctx context.Context, source *gitSource, obj *deliveryv1.Delivery) error {
	ks := source.ks
	policy, err := resolvePolicy(ctx, r.Client, obj)
	if err != nil {
		// Without its policy the Delivery is written with the built-in
		// one's settings: the default branch and the source's
		// credentials.
		spec := builtinPolicy(obj)
		policy = &spec
	}
	settings, err := source.settingsFor(ctx, r.recent.reader(r.Client), obj.Namespace, policy)
	if err != nil {
		return err
	}
	build, err := source.kustomization(ctx, r.Client)
	if err != nil {
		return err
	}
	rollout := &rolloutsv1.Rollout{}
	err = r.Get(ctx, client.ObjectKeyFromObject(obj), rollout)
	if client.IgnoreNotFound(err) != nil {
		return err
	}
	optOut := gitops.OptOut{
		Kustomization: build,
		Delivery:      gitops.ObjectID{Kind: deliveryv1.DeliveryKind, Namespace: obj.Namespace, Name: obj.Name},
		Deployment:    gitops.ObjectID{Kind: "Deployment", Namespace: obj.Namespace, Name: obj.Spec.DeploymentRef.Name},
		Replicas:      servingReplicas(obj, rollout, err == nil && metav1.IsControlledBy(rollout, obj)),
		Switched:      switchedObjects(policy),
	}
	res, err := r.Git.Write(ctx, settings.src, gitops.Change{
		Branch:     settings.branch,
		Message:    optOutMessage(obj, optOut.Replicas),
		Author:     settings.author,
		SigningKey: settings.signingKey,
		Passphrase: settings.passphrase,
		Edit:       func(root string) (bool, error) { return gitops.RemoveDelivery(root, optOut) },
	})
	if err != nil {
		return fmt.Errorf("handing Deployment %s/%s back: %w", obj.Namespace, obj.Spec.DeploymentRef.Name, err)
	}
	if res.Pushed {
		r.EventRecorder.Eventf(obj, nil, corev1.EventTypeNormal, optedOutReason, "OptOut",
			"pushed %s: the Delivery leaves Git and Deployment %s serves with %d replicas again",
			res.Commit[:12], obj.Spec.DeploymentRef.Name, optOut.Replicas)
	}
	if !ks.Spec.Prune && !inInventory(ks, obj) {
		// Flux applied the opt-out commit and leaves what left Git in the
		// cluster: remove the Delivery here, its finalizer hands the app
		// back. Before Flux applied it, Flux would bring the Delivery back
		// at the old revision.
		if err := r.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting Delivery %s/%s: %w", obj.Namespace, obj.Name, err)
		}
		return nil
	}
	return source.requestReconcile(ctx, r.Client)
}

// inInventory tells whether the Kustomization's last apply included obj.
func inInventory(ks *kustomizev1.Kustomization, obj *deliveryv1.Delivery) bool {
	if ks.Status.Inventory == nil {
		return false
	}
	id := strings.Join([]string{obj.Namespace, obj.Name, deliveryv1.GroupVersion.Group, deliveryv1.DeliveryKind}, "_")
	for _, e := range ks.Status.Inventory.Entries {
		if e.ID == id {
			return true
		}
	}
	return false
}

func (r *KustomizationReconciler) warn(obj client.Object, reason, msg string) {
	r.EventRecorder.Eventf(obj, nil, corev1.EventTypeWarning, reason, "Discover", "%s", msg)
}
