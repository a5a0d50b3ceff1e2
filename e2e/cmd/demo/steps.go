package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// The apps of the sample repository and how many replicas each serves.
var (
	delivered = []string{"web", "api"}
	allApps   = []string{"web", "api", "worker"}
	replicas  = map[string]int32{"web": webReplicas, "api": apiReplicas, "worker": workerReplicas}
)

// steps is the story, in order.
func (d *demo) steps() []step {
	return []step{{
		name: "start the stack",
		tell: `etcd, kube-apiserver, controller-manager, scheduler, a kwok node, Argo Rollouts,
Flux (source- and kustomize-controller), a Git server, and sluice built from this tree.`,
		act: d.startStack,
	}, {
		name: "create the GitOps repository",
		tell: `Dana, our user, pushes three apps to a new repository and points Flux at it:
  web     a canary (policy web-canary: 25 %, a web-metric analysis, a manual gate, 75 %)
  api     a blue-green app whose switch waits for an approval (policy api-blue-green)
  worker  a plain Deployment, which sluice must leave alone
No app is annotated yet: they run as ordinary Deployments.`,
		act:     d.createRepository,
		expect:  "Flux has applied the commit and web, api and worker have all their replicas available",
		until:   d.firstCommitApplied,
		timeout: time.Minute,
		watch:   allApps,
		show:    d.rememberWorker,
	}, {
		name: "annotate web and api",
		tell: `Dana opts web and api in with two annotations each, sluice.dev/strategy and
sluice.dev/policy, and pushes. sluice sees the annotated Deployments in the
Kustomization's inventory and answers with an adoption commit per app. api's
commit also marks the Services Argo Rollouts switches with Flux's
kustomize.toolkit.fluxcd.io/ssa: IfNotPresent, so that Flux creates them and
does not put their selectors back.`,
		act:     d.annotate,
		expect:  "sluice has pushed an adoption commit (Sluice-Action: adopt) for web and for api",
		until:   d.adopted,
		timeout: time.Minute,
		show:    d.showAdoptions,
	}, {
		name: "handover to Argo Rollouts",
		tell: `Flux applies the adoption commits. sluice runs each app as an Argo Rollout beside
its Deployment, scales the Deployment to zero once the Rollout serves, and
records the running template as stable in Git: a Promote commit, which also
parks the Deployment at replicas: 0 in Git.`,
		expect:  "web and api are served by their Rollouts, their Deployments are at zero, and Git records their stable templates",
		until:   d.handedOver,
		timeout: 90 * time.Second,
		watch:   delivered,
		show:    d.showCommits("promote"),
	}, {
		name: "release web v2 and api v2",
		tell: `Dana releases v2 of both apps: one commit that changes their images.
web's canary goes to 25 %; Argo asks the demo's metric endpoint for the success
rate of web:v2 (healthy), then waits at the manual gate. api's green pods come
up beside the blue ones and wait for the switch.`,
		act:     d.releaseV2,
		expect:  "web and api wait for an approval (phase WaitingForApproval)",
		until:   d.atGates,
		timeout: 90 * time.Second,
		watch:   delivered,
		show:    d.showMetricAnswers,
	}, {
		name: "promotion branches appear",
		tell: `At each gate sluice pushes a promotion branch; its one commit adds the approval
to the Delivery. Merging it is the approval (on a forge: a pull request).`,
		expect:  "sluice has pushed a promotion branch for web and for api",
		until:   d.branchesPushed,
		timeout: time.Minute,
		show:    d.showApproval,
	}, {
		name: "approve by merging",
		tell: `Dana merges both branches into main and pushes. Flux applies the approvals,
sluice lets each candidate past its gate, and once it is healthy records it
as the new stable template (Promote commits) and deletes the branches.`,
		act:     d.mergeApprovals,
		expect:  "web and api are Healthy on v2, Git records v2 as stable, and no promotion branch is left",
		until:   d.promotedV2,
		timeout: 90 * time.Second,
		watch:   delivered,
		show:    d.showCommits("promote"),
	}, {
		name: "release web v3 (analysis fails)",
		tell: `Dana releases web v3. The metric endpoint answers a success rate of 0.42 for it:
the analysis fails, Argo aborts the canary and keeps v2 serving, and sluice
records the rejection in Git. The policy says rollback: revert, so the same
commit puts v2 back in the Deployment.`,
		act:     d.releaseV3,
		expect:  "sluice has pushed a Reject commit for web",
		until:   d.rejected,
		timeout: 90 * time.Second,
		watch:   []string{"web"},
		show:    d.showRejection,
	}, {
		name: "v2 runs again",
		tell: `Flux applies the revert: Git describes what runs again. Dana looks with the
sluice command: the Delivery down to its pods and up to the commit Flux
applied, and its history from Git's trailers.`,
		expect:  "Git's web Deployment says v2, and web is Healthy on v2 with every pod on v2",
		until:   d.backOnV2,
		timeout: time.Minute,
		watch:   []string{"web"},
		show:    d.showTreeAndHistory,
	}, {
		name: "opt web out",
		tell: `Dana removes web's sluice annotations and pushes. sluice answers with an
opt-out commit: it deletes web-delivery.yaml and puts replicas back in the
Deployment. Flux prunes the Delivery; sluice scales the Deployment up, waits
until it serves, and deletes the Rollout.`,
		act:     d.optOut,
		expect:  fmt.Sprintf("an opt-out commit for web (Sluice-Action: opt-out), no Delivery or Rollout web, the Deployment with %d available replicas, and in Git replicas: %d and no annotation", webReplicas, webReplicas),
		until:   d.handedBack,
		timeout: 90 * time.Second,
		watch:   []string{"web"},
		show:    d.showCommits("opt-out"),
	}, {
		name:    "worker left alone",
		tell:    `All along, the plain worker Deployment was nobody's business but Flux's.`,
		expect:  "worker has no Delivery or Rollout, the same replicas and generation, no field of sluice's, and no sluice commit touches it",
		until:   d.workerUntouched,
		timeout: 10 * time.Second,
	}}
}

// createRepository pushes the sample repository and creates Flux's objects.
func (d *demo) createRepository(ctx context.Context) error {
	repoURL, err := d.stack.Git.CreateRepository(repoName)
	if err != nil {
		return err
	}
	d.remote = server{dir: filepath.Join(d.stack.Git.Root, repoName+".git")}
	d.user, err = cloneRepository(ctx, repoURL, d.stack.Git.Username, d.stack.Git.Password, filepath.Join(d.dir, "dana", repoName), d.out)
	if err != nil {
		return err
	}
	if err := d.user.write(sampleRepository(d.metric.URL)); err != nil {
		return err
	}
	if _, err := d.user.commitAndPush(ctx, "Add web, api and worker"); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "      (flux create source git %s --url=%s --branch=main --interval=2s --username=%s --password=...)\n",
		repoName, repoURL, d.stack.Git.Username)
	fmt.Fprintf(d.out, "      (flux create kustomization %s --source=%s --path=./%s --prune=true)\n", repoName, repoName, appsPath)
	return d.kube.fluxSync(ctx, repoURL, d.stack.Git.Username, d.stack.Git.Password)
}

func (d *demo) firstCommitApplied(ctx context.Context) error {
	head, err := d.user.git(ctx, "rev-parse", "HEAD")
	if err != nil {
		return err
	}
	if rev, err := d.kube.appliedRevision(ctx); err != nil || !strings.HasSuffix(rev, head) {
		return fmt.Errorf("the Kustomization applied %q, not %s (%v)", rev, head, err)
	}
	for _, app := range allApps {
		if err := d.kube.deploymentAvailable(ctx, app, replicas[app]); err != nil {
			return err
		}
	}
	return nil
}

// rememberWorker notes the plain Deployment's generation as Flux applied
// it, to check at the end that nothing else changed its spec.
func (d *demo) rememberWorker(ctx context.Context) error {
	worker := &appsv1.Deployment{}
	if _, err := d.kube.get(ctx, "worker", worker); err != nil {
		return err
	}
	d.workerGeneration = worker.Generation
	return nil
}

func (d *demo) annotate(ctx context.Context) error {
	for _, a := range []struct{ app, file, annotations string }{
		{"web", webFile, webAnnotations},
		{"api", apiFile, apiAnnotations},
	} {
		meta := fmt.Sprintf("  name: %s\n  namespace: %s\n", a.app, namespace)
		if err := d.user.edit(a.file, meta, meta+a.annotations); err != nil {
			return err
		}
	}
	_, err := d.user.commitAndPush(ctx, "Deliver web as a canary and api blue-green")
	return err
}

func (d *demo) adopted(ctx context.Context) error {
	for _, app := range delivered {
		if _, err := d.remote.sluiceCommit(ctx, app, "adopt", ""); err != nil {
			return err
		}
	}
	return nil
}

// showAdoptions pulls sluice's adoption commits and shows them, and the
// Delivery one of them added.
func (d *demo) showAdoptions(ctx context.Context) error {
	if err := d.user.pull(ctx); err != nil {
		return err
	}
	for _, app := range delivered {
		commit, err := d.remote.sluiceCommit(ctx, app, "adopt", "")
		if err != nil {
			return err
		}
		out, err := d.user.git(ctx, "show", "--stat", "--format=%h %an <%ae>%n%n%B", commit)
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "\n%s\n", indent(out, "        "))
	}
	delivery, err := d.user.git(ctx, "show", "HEAD:"+webDeliveryFile)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\n      %s, as sluice wrote it:\n\n%s\n", webDeliveryFile, indent(delivery, "        "))
	return nil
}

func (d *demo) handedOver(ctx context.Context) error {
	for _, app := range delivered {
		dlv, err := d.kube.deliveryIn(ctx, app, deliveryv1.PhaseHealthy)
		if err != nil {
			return err
		}
		if err := d.kube.servedByRollout(ctx, app, replicas[app]); err != nil {
			return err
		}
		if _, err := d.remote.sluiceCommit(ctx, app, "promote", dlv.Status.StableTemplateHash); err != nil {
			return err
		}
	}
	return nil
}

// showCommits shows sluice's newest commit of action for each app that has
// one.
func (d *demo) showCommits(action string) func(context.Context) error {
	return func(ctx context.Context) error {
		for _, app := range delivered {
			commit, err := d.remote.sluiceCommit(ctx, app, action, "")
			if err != nil {
				continue
			}
			out, err := d.remote.git(ctx, "show", "--format=%h %an: %s", "--name-only", commit)
			if err != nil {
				return err
			}
			subject, files, _ := strings.Cut(out, "\n")
			fmt.Fprintf(d.out, "      %s\n        (changes %s)\n", subject, strings.Join(strings.Fields(files), ", "))
		}
		return nil
	}
}

func (d *demo) releaseV2(ctx context.Context) error {
	if err := d.user.pull(ctx); err != nil {
		return err
	}
	if err := d.user.edit(webFile, "registry.example/web:v1", "registry.example/web:v2"); err != nil {
		return err
	}
	if err := d.user.edit(apiFile, "registry.example/api:v1", "registry.example/api:v2"); err != nil {
		return err
	}
	_, err := d.user.commitAndPush(ctx, "Release web v2 and api v2")
	return err
}

// atGates notes each app's candidate as it reaches its gate.
func (d *demo) atGates(ctx context.Context) error {
	for _, app := range delivered {
		dlv, err := d.kube.deliveryIn(ctx, app, deliveryv1.PhaseWaitingForApproval)
		if err != nil {
			return err
		}
		d.candidate[app] = dlv.Status.CandidateTemplateHash
	}
	return nil
}

func (d *demo) showMetricAnswers(context.Context) error {
	for _, a := range d.metric.answers() {
		fmt.Fprintf(d.out, "      the metric endpoint answered: %s\n", a)
	}
	return nil
}

// branchesPushed notes each app's promotion branch once the Git server has
// it.
func (d *demo) branchesPushed(ctx context.Context) error {
	for _, app := range delivered {
		dlv, err := d.kube.delivery(ctx, app)
		if err != nil {
			return err
		}
		branch := dlv.Status.PendingPromotionBranch
		if branch == "" || !strings.Contains(branch, d.candidate[app]) {
			return fmt.Errorf("Delivery %s names no promotion branch for template %s yet (%q)", app, d.candidate[app], branch)
		}
		if ok, err := d.remote.hasBranch(ctx, branch); !ok {
			return fmt.Errorf("the Git server has no branch %s yet (%v)", branch, err)
		}
		d.branch[app] = branch
	}
	return nil
}

// showApproval shows the approval commit of web's branch.
func (d *demo) showApproval(ctx context.Context) error {
	for _, app := range delivered {
		fmt.Fprintf(d.out, "      %s\n", d.branch[app])
	}
	out, err := d.remote.git(ctx, "log", "-1", "--format=%h %an <%ae>%n%n%B", d.branch["web"])
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\n%s\n", indent(out, "        "))
	return nil
}

func (d *demo) mergeApprovals(ctx context.Context) error {
	for _, app := range delivered {
		if _, err := d.user.merge(ctx, d.branch[app], fmt.Sprintf("Approve %s v2", app)); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) promotedV2(ctx context.Context) error {
	for _, app := range delivered {
		dlv, err := d.kube.deliveryIn(ctx, app, deliveryv1.PhaseHealthy)
		if err != nil {
			return err
		}
		if dlv.Status.StableTemplateHash != d.candidate[app] {
			return fmt.Errorf("Delivery %s is Healthy on template %s, not the candidate %s", app, dlv.Status.StableTemplateHash, d.candidate[app])
		}
		if _, err := d.remote.sluiceCommit(ctx, app, "promote", d.candidate[app]); err != nil {
			return err
		}
	}
	if left, err := d.remote.branches(ctx, "sluice/promote/"); err != nil || len(left) > 0 {
		return fmt.Errorf("promotion branches are left: %v (%v)", left, err)
	}
	return nil
}

func (d *demo) releaseV3(ctx context.Context) error {
	if err := d.user.pull(ctx); err != nil {
		return err
	}
	if err := d.user.edit(webFile, "registry.example/web:v2", "registry.example/web:v3"); err != nil {
		return err
	}
	_, err := d.user.commitAndPush(ctx, "Release web v3")
	return err
}

func (d *demo) rejected(ctx context.Context) error {
	_, err := d.remote.sluiceCommit(ctx, "web", "reject", "")
	return err
}

// showRejection shows what the metric endpoint answered and sluice's
// Reject commit, with the revert of the image.
func (d *demo) showRejection(ctx context.Context) error {
	if err := d.showMetricAnswers(ctx); err != nil {
		return err
	}
	commit, err := d.remote.sluiceCommit(ctx, "web", "reject", "")
	if err != nil {
		return err
	}
	out, err := d.remote.git(ctx, "show", "--format=%h %an <%ae>%n%n%B", commit, "--", webFile)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\n%s\n", indent(out, "        "))
	return nil
}

func (d *demo) backOnV2(ctx context.Context) error {
	file, err := d.remote.file(ctx, webFile)
	if err != nil {
		return err
	}
	if !strings.Contains(file, "image: registry.example/web:v2") {
		return fmt.Errorf("Git's %s does not say web:v2 yet", webFile)
	}
	dlv, err := d.kube.deliveryIn(ctx, "web", deliveryv1.PhaseHealthy)
	if err != nil {
		return err
	}
	if dlv.Status.StableTemplateHash != d.candidate["web"] {
		return fmt.Errorf("Delivery web is Healthy on template %s, not v2's %s", dlv.Status.StableTemplateHash, d.candidate["web"])
	}
	images, err := d.kube.podImages(ctx, "web")
	if err != nil {
		return err
	}
	if len(images) != 1 || images["registry.example/web:v2"] != webReplicas {
		return fmt.Errorf("web's pods run %v, not %d × web:v2", images, webReplicas)
	}
	return nil
}

func (d *demo) optOut(ctx context.Context) error {
	if err := d.user.pull(ctx); err != nil {
		return err
	}
	if err := d.user.edit(webFile, webAnnotations, ""); err != nil {
		return err
	}
	_, err := d.user.commitAndPush(ctx, "Hand web back to its Deployment")
	return err
}

func (d *demo) handedBack(ctx context.Context) error {
	if _, err := d.remote.sluiceCommit(ctx, "web", "opt-out", ""); err != nil {
		return err
	}
	if delivery, err := d.remote.file(ctx, webDeliveryFile); err != nil || delivery != "" {
		return fmt.Errorf("Git still has %s (%v)", webDeliveryFile, err)
	}
	file, err := d.remote.file(ctx, webFile)
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("\n  replicas: %d\n", webReplicas); !strings.Contains(file, want) {
		return fmt.Errorf("Git's %s has no %q:\n%s", webFile, strings.TrimSpace(want), file)
	}
	if strings.Contains(file, "sluice.dev/") {
		return fmt.Errorf("Git's %s still has a sluice.dev annotation:\n%s", webFile, file)
	}
	if err := d.kube.gone(ctx, "Delivery", "web", &deliveryv1.Delivery{}); err != nil {
		return err
	}
	if err := d.kube.gone(ctx, "Rollout", "web", &rolloutsv1.Rollout{}); err != nil {
		return err
	}
	return d.kube.deploymentAvailable(ctx, "web", webReplicas)
}

func (d *demo) workerUntouched(ctx context.Context) error {
	if err := d.kube.gone(ctx, "Delivery", "worker", &deliveryv1.Delivery{}); err != nil {
		return err
	}
	if err := d.kube.gone(ctx, "Rollout", "worker", &rolloutsv1.Rollout{}); err != nil {
		return err
	}
	if err := d.kube.deploymentAvailable(ctx, "worker", workerReplicas); err != nil {
		return err
	}
	worker := &appsv1.Deployment{}
	if _, err := d.kube.get(ctx, "worker", worker); err != nil {
		return err
	}
	if worker.Generation != d.workerGeneration {
		return fmt.Errorf("Deployment worker is at generation %d, not %d: something changed its spec", worker.Generation, d.workerGeneration)
	}
	for _, f := range worker.ManagedFields {
		if f.Manager == "sluice" {
			return fmt.Errorf("sluice owns fields of Deployment worker (%s)", f.Operation)
		}
	}
	touched, err := d.remote.git(ctx, "log", "--format=%h %s", "--author=sluice@sluice.dev", "main", "--", workerFile)
	if err != nil || touched != "" {
		return fmt.Errorf("sluice commits touch %s: %s (%v)", workerFile, touched, err)
	}
	mention, err := d.remote.git(ctx, "log", "--format=%h %s", "--author=sluice@sluice.dev", "--fixed-strings", "--grep", namespace+"/worker", "--all")
	if err != nil || mention != "" {
		return fmt.Errorf("sluice commits mention %s/worker: %s (%v)", namespace, mention, err)
	}
	return nil
}

// printHistory prints the repository's history as the user sees it after
// a last pull: who did what, with sluice's trailers.
func (d *demo) printHistory(ctx context.Context) error {
	if err := d.user.pull(ctx); err != nil {
		return err
	}
	out, err := d.user.git(ctx, "log", "--graph", "--format=%h %<(6)%an %s%+(trailers:key=Sluice-Action,key=Sluice-Template-Hash,key=Sluice-Step,separator=%x20%x20)")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\nThe GitOps repository's history (git log --graph), sluice's trailers under its commits:\n\n%s\n", indent(out, "  "))
	return nil
}

// showTreeAndHistory prints what the sluice command says of web: its tree
// and its history.
func (d *demo) showTreeAndHistory(ctx context.Context) error {
	if err := d.user.pull(ctx); err != nil {
		return err
	}
	for _, args := range [][]string{{"tree", "web"}, {"history", "web"}} {
		out, err := d.sluiceCommand(ctx, args...)
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "\n  $ sluice %s\n%s\n", strings.Join(args, " "), indent(out, "  "))
	}
	return nil
}

// sluiceCommand runs the sluice command line as Dana, on the demo's
// namespace, with her clone.
func (d *demo) sluiceCommand(ctx context.Context, args ...string) (string, error) {
	args = append(args, "--kubeconfig", d.stack.Kubeconfig, "-n", namespace, "--repo", d.user.dir)
	out, err := exec.CommandContext(ctx, d.opts.cli, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("sluice %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimRight(string(out), "\n"), nil
}
