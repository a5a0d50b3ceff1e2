package v1alpha1

// Condition types of a Delivery besides Flux's Ready, Reconciling and Stalled
// (github.com/fluxcd/pkg/apis/meta), which sluice uses with their kstatus
// meaning.
const (
	// PromotedCondition tells whether the candidate template has been
	// promoted to stable. It is False with RejectedReason when Argo Rollouts
	// aborted the candidate.
	PromotedCondition string = "Promoted"

	// GitWriteBackCondition tells whether sluice could write the
	// Delivery's promotion state to Git. It is False with
	// GitPushRefusedReason when the server refused the push.
	GitWriteBackCondition string = "GitWriteBack"
)

// Reasons of a Delivery's conditions. Each names what the user sees and, for
// the Stalled ones, what the user must change.
const (
	// DeploymentNotFoundReason: spec.deploymentRef names no Deployment in the
	// Delivery's namespace.
	DeploymentNotFoundReason string = "DeploymentNotFound"

	// StableTemplateMismatchReason: the stable template recorded in
	// spec.promotion.stable cannot be rebuilt from the Deployment's template
	// and the recorded images.
	StableTemplateMismatchReason string = "StableTemplateMismatch"

	// RolloutConflictReason: a Rollout with the Delivery's name exists and
	// belongs to something else.
	RolloutConflictReason string = "RolloutConflict"

	// PolicyNotFoundReason: spec.policyRef names no DeliveryPolicy in the
	// Delivery's namespace.
	PolicyNotFoundReason string = "PolicyNotFound"

	// InvalidPolicyReason: the DeliveryPolicy cannot be used for this
	// Delivery, for example its strategy differs from spec.strategy or it
	// names a Service, HTTPRoute or AnalysisTemplate that does not exist.
	InvalidPolicyReason string = "InvalidPolicy"

	// GitPushRefusedReason: the Git server refused sluice's push, for
	// example because the source's credentials may only read; the policy's
	// spec.git.push.secretRef can name credentials that may push.
	GitPushRefusedReason string = "GitPushRefused"

	// GitCannotEditReason: sluice cannot edit the manifests safely, for
	// example because a patch sets the field it must change; the message
	// names the line a human must change.
	GitCannotEditReason string = "GitCannotEdit"

	// GitConflictReason: other writers kept moving the branch and sluice
	// gave up after its retries.
	GitConflictReason string = "GitConflict"

	// GitSourceNotWritableReason: the Kustomization's source is not one
	// sluice may write to: not a GitRepository, a GitRepository pinned to
	// a tag, semver range or commit, or one that includes other
	// repositories. Have it follow a branch.
	GitSourceNotWritableReason string = "GitSourceNotWritable"

	// GitCredentialsUnavailableReason: a Secret sluice needs to write to
	// Git (the GitRepository's secretRef, the policy's
	// spec.git.push.secretRef or signingKey) does not exist or sluice may
	// not read it; outside flux-system, bind the ClusterRole
	// sluice-secret-reader to sluice's ServiceAccount in its namespace.
	GitCredentialsUnavailableReason string = "GitCredentialsUnavailable"

	// GitInsecureTransportReason: the credentials would go in clear text
	// to a plain http:// repository URL, which sluice refuses; use an
	// https:// URL, or run sluice with --insecure-credentials-over-http.
	GitInsecureTransportReason string = "GitInsecureTransport"

	// HandoverReason: traffic is moving between the Deployment's pods and
	// the Rollout's pods (adoption or opt-out).
	HandoverReason string = "Handover"

	// ProgressingReason: Argo Rollouts is running the strategy for a
	// candidate template.
	ProgressingReason string = "Progressing"

	// WaitingForApprovalReason: the Rollout is paused at a manual gate and
	// waits for an approval in spec.promotion.approvals.
	WaitingForApprovalReason string = "WaitingForApproval"

	// ApprovalMismatchReason: spec.promotion.approvals holds an approval,
	// but not for the candidate and step the Rollout is waiting at.
	ApprovalMismatchReason string = "ApprovalMismatch"

	// RejectedReason: Argo Rollouts aborted the candidate, or
	// spec.promotion.rejection names the candidate's template.
	RejectedReason string = "Rejected"

	// AbortedReason: sluice aborted the Rollout of a candidate that
	// spec.promotion.rejection names.
	AbortedReason string = "Aborted"

	// RetriedReason: spec.promotion.rejection no longer names the
	// candidate the Rollout holds aborted, and sluice let it roll again.
	RetriedReason string = "Retried"

	// HandBackStalledReason: the Delivery is being removed and its
	// Deployment cannot get the replicas to take the app back (a quota,
	// no capacity); the Rollout keeps serving until it can, or until the
	// Delivery is annotated sluice.dev/hand-back=force.
	HandBackStalledReason string = "HandBackStalled"
)
