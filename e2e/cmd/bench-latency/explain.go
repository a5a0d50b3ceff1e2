package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

// explain writes what the stack showed last when a wait failed: Flux's
// objects, the Delivery, the pushes and the ends of sluice's and Flux's
// logs, so that a failed run says where it stood without its logs.
func (b *bench) explain(w io.Writer) {
	if b.stack == nil || b.kube == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Fprintln(w, "\nwhere the stack stood:")
	key := types.NamespacedName{Namespace: stack.FluxNamespace, Name: repoName}
	var repo sourcev1.GitRepository
	if err := b.kube.Get(ctx, key, &repo); err != nil {
		fmt.Fprintf(w, "  GitRepository: %v\n", err)
	} else {
		artifact := "none"
		if repo.Status.Artifact != nil {
			artifact = repo.Status.Artifact.Revision
		}
		fmt.Fprintf(w, "  GitRepository: artifact %s; %s\n", artifact, describeConditions(repo.Status.Conditions))
	}
	var ks kustomizev1.Kustomization
	if err := b.kube.Get(ctx, key, &ks); err != nil {
		fmt.Fprintf(w, "  Kustomization: %v\n", err)
	} else {
		fmt.Fprintf(w, "  Kustomization: attempted %s, applied %s; %s\n",
			ks.Status.LastAttemptedRevision, ks.Status.LastAppliedRevision, describeConditions(ks.Status.Conditions))
	}
	if s, ok := b.deliveries.last(); ok {
		d := s.obj.(*deliveryv1.Delivery)
		recorded := ""
		if d.Spec.Promotion.Stable != nil {
			recorded = d.Spec.Promotion.Stable.TemplateHash
		}
		fmt.Fprintf(w, "  Delivery (seen %s): generation %d, phase %s, step %d, stable %q (recorded %q), candidate %q, branch %q; %s\n",
			s.at.Format(time.TimeOnly), d.Generation, d.Status.Phase, ptr.Deref(d.Status.CurrentStep, -1),
			d.Status.StableTemplateHash, recorded, d.Status.CandidateTemplateHash, d.Status.PendingPromotionBranch,
			describeConditions(d.Status.Conditions))
	} else {
		fmt.Fprintln(w, "  Delivery: none seen")
	}
	if s, ok := b.deployments.last(); ok {
		d := s.obj.(*appsv1.Deployment)
		fmt.Fprintf(w, "  Deployment (seen %s): replicas %d, ready %d, available %d\n",
			s.at.Format(time.TimeOnly), ptr.Deref(d.Spec.Replicas, 1), d.Status.ReadyReplicas, d.Status.AvailableReplicas)
	}
	if s, ok := b.rollouts.last(); ok {
		r := s.obj.(*rolloutsv1.Rollout)
		fmt.Fprintf(w, "  Rollout (seen %s): phase %s (%s), step %d, stable %s, current %s\n",
			s.at.Format(time.TimeOnly), r.Status.Phase, r.Status.Message, ptr.Deref(r.Status.CurrentStepIndex, -1),
			r.Status.StableRS, r.Status.CurrentPodHash)
	}
	for _, s := range b.pushes.all() {
		p := s.obj.(push)
		subject, _, _ := strings.Cut(p.message, "\n")
		fmt.Fprintf(w, "  push to %s at %s: %s\n", p.repository, s.at.Format(time.TimeOnly), subject)
	}
	for _, name := range []string{"sluice", "kustomize-controller"} {
		path := filepath.Join(b.stack.LogDir(), name+".log")
		fmt.Fprintf(w, "\nlast lines of %s:\n", path)
		for _, l := range stack.Tail(path, 25) {
			fmt.Fprintln(w, "  "+l)
		}
	}
}

func describeConditions(conds []metav1.Condition) string {
	if len(conds) == 0 {
		return "no conditions"
	}
	parts := make([]string, 0, len(conds))
	for _, c := range conds {
		parts = append(parts, fmt.Sprintf("%s=%s %s: %q", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(parts, "; ")
}
