package v1alpha1

import (
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeliveryKind is the kind of Delivery.
const DeliveryKind = "Delivery"

// DeliveryFinalizer holds a Delivery until its Deployment has been handed
// back.
const DeliveryFinalizer = "finalizers.delivery.sluice.dev"

// Strategies a Delivery can use, as written in the sluice.dev/strategy
// annotation.
const (
	// StrategyCanary is a canary release.
	StrategyCanary = "canary"
	// StrategyBlueGreen is a blue-green release.
	StrategyBlueGreen = "blue-green"
)

// DeliverySpec is what Git says about one progressively delivered
// Deployment. sluice changes it only through commits to Git.
type DeliverySpec struct {
	// DeploymentRef names the Deployment, in the Delivery's namespace, whose
	// pod template is delivered.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="deploymentRef is immutable: remove this Delivery and add a new one"
	DeploymentRef meta.LocalObjectReference `json:"deploymentRef"`

	// Strategy of the delivery, as in the Deployment's sluice.dev/strategy
	// annotation. It picks the built-in policy when policyRef is unset and
	// must match the policy when it is set.
	// +kubebuilder:validation:Enum=canary;blue-green
	Strategy string `json:"strategy"`

	// PolicyRef names the DeliveryPolicy, in the Delivery's namespace; the
	// built-in policy of the strategy when unset.
	// +optional
	PolicyRef *meta.LocalObjectReference `json:"policyRef,omitempty"`

	// Replicas is the number of serving pods. It lives here rather than in
	// the Deployment so that Flux and sluice never own the same field.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=1
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Suspend tells sluice to leave the Delivery and what it runs as they
	// are.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Interval at which sluice reconciles the Delivery when nothing it
	// watches changes.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:default="10m"
	// +optional
	Interval metav1.Duration `json:"interval,omitempty"`

	// Promotion is the promotion state recorded in Git: the stable
	// template, approvals of manual gates and the last rejection.
	// +optional
	Promotion Promotion `json:"promotion,omitempty"`
}

// Promotion is a Delivery's promotion state, recorded in Git.
type Promotion struct {
	// Stable is the last promoted template. A rebuilt cluster starts from it
	// and releases any other template as a candidate.
	// +optional
	Stable *StableRelease `json:"stable,omitempty"`

	// Approvals of manual gates. An approval counts only for the candidate
	// template and step it names.
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=templateHash
	// +listMapKey=step
	// +optional
	Approvals []Approval `json:"approvals,omitempty"`

	// Rejection is the last rejected template; sluice does not release it
	// again until this changes. When it names the candidate the Rollout is
	// rolling out, sluice aborts the Rollout and the stable pods keep
	// serving; when it is removed again, sluice retries that candidate.
	// +optional
	Rejection *Rejection `json:"rejection,omitempty"`
}

// StableRelease is a template that was promoted.
type StableRelease struct {
	// TemplateHash of the Deployment's pod template, as sluice computes it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	TemplateHash string `json:"templateHash"`

	// Revision of the Git source in which the template was promoted, in
	// Flux's form (main@sha1:...).
	// +optional
	Revision string `json:"revision,omitempty"`

	// Images of the template's containers, by container name.
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	// +optional
	Images []ContainerImage `json:"images,omitempty"`

	// PromotedAt is when the promotion was recorded.
	// +optional
	PromotedAt *metav1.Time `json:"promotedAt,omitempty"`
}

// ContainerImage is the image of one container.
type ContainerImage struct {
	// Name of the container.
	Name string `json:"name"`
	// Image of the container.
	Image string `json:"image"`
}

// Approval approves the candidate's manual gate at one step.
type Approval struct {
	// TemplateHash of the candidate.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	TemplateHash string `json:"templateHash"`

	// Step is the index of the pause step being approved (for blue-green,
	// 0 is the promotion).
	// +kubebuilder:validation:Minimum=0
	Step int32 `json:"step"`

	// ApprovedAt is when the approval was written.
	// +optional
	ApprovedAt *metav1.Time `json:"approvedAt,omitempty"`
}

// Rejection records a rejected candidate.
type Rejection struct {
	// TemplateHash of the rejected candidate.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	TemplateHash string `json:"templateHash"`

	// Reason in words, such as which metric failed.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Reason string `json:"reason,omitempty"`

	// AnalysisRun that failed, if one did.
	// +optional
	AnalysisRun string `json:"analysisRun,omitempty"`

	// Metric that failed, if one did.
	// +optional
	Metric string `json:"metric,omitempty"`

	// RejectedAt is when the rejection was recorded.
	// +optional
	RejectedAt *metav1.Time `json:"rejectedAt,omitempty"`
}

// DeliveryPhase is where a Delivery is in its life, in one word.
type DeliveryPhase string

// Phases of a Delivery.
const (
	// PhasePending: sluice has not yet reconciled the Delivery.
	PhasePending DeliveryPhase = "Pending"
	// PhaseHandover: the Rollout is coming up beside the Deployment.
	PhaseHandover DeliveryPhase = "Handover"
	// PhaseProgressing: a candidate is being rolled out.
	PhaseProgressing DeliveryPhase = "Progressing"
	// PhaseWaitingForApproval: the Rollout waits at a manual gate.
	PhaseWaitingForApproval DeliveryPhase = "WaitingForApproval"
	// PhaseHealthy: the Rollout serves the intended template.
	PhaseHealthy DeliveryPhase = "Healthy"
	// PhaseRejected: the candidate was aborted; stable serves.
	PhaseRejected DeliveryPhase = "Rejected"
	// PhaseHandingBack: the Deployment is taking the app back.
	PhaseHandingBack DeliveryPhase = "HandingBack"
	// PhaseFailed: the Delivery cannot proceed until the user changes
	// something; Stalled says what.
	PhaseFailed DeliveryPhase = "Failed"
)

// DeliveryStatus is what sluice observes of a Delivery.
type DeliveryStatus struct {
	// ObservedGeneration is the last generation sluice finished
	// reconciling.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, Reconciling, Stalled and Promoted.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	meta.ReconcileRequestStatus `json:",inline"`

	// Phase in one word.
	// +optional
	Phase DeliveryPhase `json:"phase,omitempty"`

	// CurrentStep is the index of the strategy step the Rollout is at.
	// +optional
	CurrentStep *int32 `json:"currentStep,omitempty"`

	// CanaryWeight is the percentage of traffic the candidate receives.
	// +optional
	CanaryWeight *int32 `json:"canaryWeight,omitempty"`

	// StableTemplateHash is the template hash the stable pods run.
	// +optional
	StableTemplateHash string `json:"stableTemplateHash,omitempty"`

	// CandidateTemplateHash is the template hash being rolled out, if any.
	// +optional
	CandidateTemplateHash string `json:"candidateTemplateHash,omitempty"`

	// LastPushedCommit is the last commit sluice pushed for this Delivery.
	// +optional
	LastPushedCommit string `json:"lastPushedCommit,omitempty"`

	// PendingPromotionBranch is the branch whose merge approves the gate
	// the Rollout waits at.
	// +optional
	PendingPromotionBranch string `json:"pendingPromotionBranch,omitempty"`

	// RejectedTemplateHash is the candidate the Rollout holds aborted while
	// spec.promotion.rejection names it. When the rejection leaves Git
	// while the Rollout still holds that candidate aborted, sluice retries
	// the candidate, as `kubectl argo rollouts retry` does.
	// +optional
	RejectedTemplateHash string `json:"rejectedTemplateHash,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=dlv;dlvs
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Step",type=integer,JSONPath=`.status.currentStep`
// +kubebuilder:printcolumn:name="Weight",type=integer,JSONPath=`.status.canaryWeight`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Delivery delivers one Deployment progressively through an Argo Rollout.
// Its spec lives in Git; its status is sluice's.
type Delivery struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec DeliverySpec `json:"spec"`
	// +optional
	Status DeliveryStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions of the Delivery.
func (in *Delivery) GetConditions() []metav1.Condition {
	return in.Status.Conditions
}

// SetConditions sets the status conditions of the Delivery.
func (in *Delivery) SetConditions(conditions []metav1.Condition) {
	in.Status.Conditions = conditions
}

// GetRequeueAfter returns the interval at which the Delivery is reconciled
// when nothing it watches changes.
func (in *Delivery) GetRequeueAfter() time.Duration {
	return in.Spec.Interval.Duration
}

// GetReplicas returns the serving replicas, 1 when unset.
func (in *Delivery) GetReplicas() int32 {
	if in.Spec.Replicas == nil {
		return 1
	}
	return *in.Spec.Replicas
}

// +kubebuilder:object:root=true

// DeliveryList is a list of Delivery.
type DeliveryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Delivery `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Delivery{}, &DeliveryList{})
}
