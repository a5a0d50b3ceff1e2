package v1alpha1

import (
	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeliveryPolicyKind is the kind of DeliveryPolicy.
const DeliveryPolicyKind = "DeliveryPolicy"

// Rollback modes of a DeliveryPolicy's Git write-back.
const (
	// RollbackRecord records a rejection in the Delivery and leaves the
	// Deployment in Git as it is.
	RollbackRecord = "record"
	// RollbackRevert records a rejection and also restores the Deployment's
	// pod template in Git to the stable one.
	RollbackRevert = "revert"
)

// DeliveryPolicySpec is the reusable strategy of one or more Deliveries and
// how sluice writes their promotion state back to Git. Exactly one of canary
// and blueGreen is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.canary) != has(self.blueGreen)",message="exactly one of spec.canary and spec.blueGreen must be set"
type DeliveryPolicySpec struct {
	// Canary shifts traffic to the candidate in steps.
	// +optional
	Canary *CanaryStrategy `json:"canary,omitempty"`

	// BlueGreen runs the candidate beside the stable version behind a
	// preview Service and switches the active Service at promotion.
	// +optional
	BlueGreen *BlueGreenStrategy `json:"blueGreen,omitempty"`

	// RollbackWindow lets a return to a recent earlier template skip the
	// strategy's steps, gates and analysis, as Argo Rollouts' own
	// spec.rollbackWindow does. When unset, the window is 3 revisions.
	// A return to the stable template always skips them.
	// +optional
	RollbackWindow *RollbackWindow `json:"rollbackWindow,omitempty"`

	// Git says how sluice writes adoption, promotion, approval and
	// rejection back to the Kustomization's Git source.
	// +kubebuilder:default={}
	// +optional
	Git GitWriteBack `json:"git,omitempty"`
}

// DefaultRollbackWindowRevisions is the rollback window of a policy that
// does not set spec.rollbackWindow.
const DefaultRollbackWindowRevisions int32 = 3

// RollbackWindow says how far back a rollback skips the strategy.
type RollbackWindow struct {
	// Revisions is how many of the Rollout's revisions before the stable
	// one a rollback may return to without going through the steps: with
	// 1, only the revision just before the stable one. Every template the
	// Rollout ran counts, a rejected candidate too. 0 runs every rollback
	// but one to the stable template through the strategy.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Revisions int32 `json:"revisions"`
}

// CanaryStrategy is a canary release: the steps run in order; a pause
// without a duration is a manual gate, approved by merging sluice's
// promotion branch.
type CanaryStrategy struct {
	// Steps of the canary, in order.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",message="setWeight must not decrease from one step to a later one"
	// +listType=atomic
	Steps []CanaryStep `json:"steps"`

	// TrafficRouting splits traffic between stable and canary pods. When
	// unset, the split follows the ratio of replicas.
	// +optional
	TrafficRouting *TrafficRouting `json:"trafficRouting,omitempty"`

	// BackgroundAnalysis runs for the whole canary, from the first step to
	// promotion; a failure aborts the candidate.
	// +optional
	BackgroundAnalysis *Analysis `json:"backgroundAnalysis,omitempty"`
}

// CanaryStep is one step of a canary: exactly one of setWeight, pause and
// analysis is set.
//
// +kubebuilder:validation:XValidation:rule="[has(self.setWeight), has(self.pause), has(self.analysis)].filter(x, x).size() == 1",message="a step sets exactly one of setWeight, pause and analysis"
type CanaryStep struct {
	// SetWeight sends this percentage of traffic to the candidate.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	SetWeight *int32 `json:"setWeight,omitempty"`

	// Pause stops the canary for a duration or, without one, until
	// approved.
	// +optional
	Pause *PauseStep `json:"pause,omitempty"`

	// Analysis runs AnalysisTemplates and continues only when they succeed.
	// +optional
	Analysis *Analysis `json:"analysis,omitempty"`
}

// PauseStep pauses a canary.
type PauseStep struct {
	// Duration of the pause, such as 30s, 5m or 1h30m. Without it the pause
	// is a manual gate.
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(s|m|h))+$')",message="must be a duration in whole seconds, minutes or hours such as 30s, 5m or 1h30m"
	// +optional
	Duration string `json:"duration,omitempty"`
}

// TrafficRouting says how a canary's traffic is split.
type TrafficRouting struct {
	// GatewayAPI splits traffic with the Argo Rollouts Gateway API plugin
	// (argoproj-labs/gatewayAPI), for example through Envoy Gateway.
	// +required
	GatewayAPI *GatewayAPIRouting `json:"gatewayAPI"`
}

// GatewayAPIRouting names the HTTPRoute whose backend weights the plugin sets
// and the Services it weighs.
type GatewayAPIRouting struct {
	// HTTPRoute is the name of the HTTPRoute that sends traffic to the app.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	HTTPRoute string `json:"httpRoute"`

	// Namespace of the HTTPRoute; the Delivery's namespace when unset.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// StableService is the Service that reaches the stable pods.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	StableService string `json:"stableService"`

	// CanaryService is the Service that reaches the candidate's pods.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	CanaryService string `json:"canaryService"`
}

// BlueGreenStrategy is a blue-green release.
//
// +kubebuilder:validation:XValidation:rule="!has(self.previewService) || self.previewService != self.activeService",message="previewService must differ from activeService"
type BlueGreenStrategy struct {
	// ActiveService is the Service that reaches the stable pods and is
	// switched to the candidate at promotion.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	ActiveService string `json:"activeService"`

	// PreviewService reaches the candidate's pods before promotion.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	PreviewService string `json:"previewService,omitempty"`

	// AutoPromotionEnabled promotes the candidate as soon as it is ready;
	// when false, promotion waits for an approval merged through Git.
	// +kubebuilder:default=true
	// +optional
	AutoPromotionEnabled *bool `json:"autoPromotionEnabled,omitempty"`

	// ScaleDownDelaySeconds keeps the old pods this long after the switch.
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=0
	// +optional
	ScaleDownDelaySeconds *int32 `json:"scaleDownDelaySeconds,omitempty"`

	// PrePromotionAnalysis must succeed before the active Service switches.
	// +optional
	PrePromotionAnalysis *Analysis `json:"prePromotionAnalysis,omitempty"`

	// PostPromotionAnalysis runs after the switch; a failure switches back.
	// +optional
	PostPromotionAnalysis *Analysis `json:"postPromotionAnalysis,omitempty"`
}

// Analysis runs Argo Rollouts AnalysisTemplates.
type Analysis struct {
	// Templates to run.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Templates []AnalysisTemplateRef `json:"templates"`

	// Args passed to the templates.
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	// +optional
	Args []AnalysisArg `json:"args,omitempty"`
}

// AnalysisTemplateRef names an AnalysisTemplate, or a
// ClusterAnalysisTemplate when clusterScope is true.
type AnalysisTemplateRef struct {
	// Name of the template.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// ClusterScope refers to a ClusterAnalysisTemplate.
	// +optional
	ClusterScope bool `json:"clusterScope,omitempty"`
}

// AnalysisArg is an argument of an analysis: a value or where to take it
// from.
//
// +kubebuilder:validation:XValidation:rule="has(self.value) != has(self.valueFrom)",message="an arg sets exactly one of value and valueFrom"
type AnalysisArg struct {
	// Name of the argument, as the template declares it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Value of the argument.
	// +optional
	Value *string `json:"value,omitempty"`

	// ValueFrom takes the value from the Rollout.
	// +optional
	ValueFrom *AnalysisArgSource `json:"valueFrom,omitempty"`
}

// AnalysisArgSource takes an analysis argument from the running Rollout.
//
// +kubebuilder:validation:XValidation:rule="has(self.podTemplateHashValue) != has(self.fieldRef)",message="valueFrom sets exactly one of podTemplateHashValue and fieldRef"
type AnalysisArgSource struct {
	// PodTemplateHashValue is the template hash of the Stable or the
	// Latest (candidate) pods.
	// +kubebuilder:validation:Enum=Stable;Latest
	// +optional
	PodTemplateHashValue *string `json:"podTemplateHashValue,omitempty"`

	// FieldRef is a field path of the Rollout, such as
	// metadata.labels['app'].
	// +optional
	FieldRef *AnalysisFieldRef `json:"fieldRef,omitempty"`
}

// AnalysisFieldRef selects a field of the Rollout.
type AnalysisFieldRef struct {
	// FieldPath of the field.
	// +kubebuilder:validation:MinLength=1
	FieldPath string `json:"fieldPath"`
}

// GitWriteBack says how sluice writes to the Kustomization's Git source.
type GitWriteBack struct {
	// Commit says who signs and authors sluice's commits and what their
	// messages say.
	// +kubebuilder:default={}
	// +optional
	Commit GitCommit `json:"commit,omitempty"`

	// Push says where sluice pushes and with which credentials.
	// +kubebuilder:default={}
	// +optional
	Push GitPush `json:"push,omitempty"`

	// Rollback says what a rejection commit does: record only records the
	// rejection in the Delivery; revert also restores the Deployment's pod
	// template in Git to the stable one.
	// +kubebuilder:validation:Enum=record;revert
	// +kubebuilder:default=record
	// +optional
	Rollback string `json:"rollback,omitempty"`
}

// GitCommit describes sluice's commits.
type GitCommit struct {
	// Author of sluice's commits, also used as committer.
	// +kubebuilder:default={}
	// +optional
	Author CommitUser `json:"author,omitempty"`

	// SigningKey signs commits with OpenPGP. The Secret holds an armored
	// private key under git.asc and, when it is encrypted, its passphrase
	// under passphrase.
	// +optional
	SigningKey *SigningKey `json:"signingKey,omitempty"`

	// MessageTemplates are Go templates for the commit messages; each unset
	// one has a built-in default. sluice appends machine-readable trailers
	// to every message.
	// +optional
	MessageTemplates CommitMessageTemplates `json:"messageTemplates,omitempty"`
}

// CommitUser is a Git identity.
type CommitUser struct {
	// Name of the identity.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:default=sluice
	// +optional
	Name string `json:"name,omitempty"`

	// Email of the identity.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:default="sluice@sluice.dev"
	// +optional
	Email string `json:"email,omitempty"`
}

// SigningKey refers to a Secret with an OpenPGP key.
type SigningKey struct {
	// SecretRef names the Secret in the policy's namespace.
	SecretRef meta.LocalObjectReference `json:"secretRef"`
}

// CommitMessageTemplates are the Go templates of sluice's commit messages.
type CommitMessageTemplates struct {
	// Adoption is the message of the commit that adds a Delivery; it sees
	// .Deployment, .Strategy, .Policy, .Hash and .Action. It is the
	// adoption's when the Deployment names this policy.
	// +optional
	Adoption string `json:"adoption,omitempty"`

	// Promotion is the message of the commit that records a new stable
	// template.
	// +optional
	Promotion string `json:"promotion,omitempty"`

	// Approval is the message of the promotion branch's commit, whose merge
	// approves a manual gate.
	// +optional
	Approval string `json:"approval,omitempty"`

	// Rejection is the message of the commit that records a rejection.
	// +optional
	Rejection string `json:"rejection,omitempty"`
}

// GitPush says where and how sluice pushes.
type GitPush struct {
	// Branch that sluice pushes its records to; the GitRepository's branch
	// when unset.
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Branch string `json:"branch,omitempty"`

	// PromotionBranchTemplate is a Go template for the name of the branch
	// that carries an approval. It sees .Namespace, .Name, .Step and .Hash,
	// and must use .Step and .Hash, so that each candidate and gate has a
	// branch of its own. sluice deletes only the branches it pushed for a
	// Delivery, whatever their names.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self.matches('[{][{][-]? *[.]Step *[-]?[}][}]') && self.matches('[{][{][-]? *[.]Hash *[-]?[}][}]')",message="the promotion branch template must use {{.Step}} and {{.Hash}}"
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:default="sluice/promote/{{.Namespace}}/{{.Name}}/{{.Step}}-{{.Hash}}"
	// +optional
	PromotionBranchTemplate string `json:"promotionBranchTemplate,omitempty"`

	// SecretRef names a Secret with credentials that may push, in Flux's
	// GitRepository secret format, for when the GitRepository's own
	// credentials are read-only.
	// +optional
	SecretRef *meta.LocalObjectReference `json:"secretRef,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=dpol;dpols
// +kubebuilder:printcolumn:name="Rollback",type=string,JSONPath=`.spec.git.rollback`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// DeliveryPolicy is a reusable progressive-delivery strategy and the settings
// for writing its outcomes back to Git.
type DeliveryPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec DeliveryPolicySpec `json:"spec"`
}

// Strategy returns the strategy the policy describes: StrategyCanary or
// StrategyBlueGreen.
func (in *DeliveryPolicy) Strategy() string {
	if in.Spec.BlueGreen != nil {
		return StrategyBlueGreen
	}
	return StrategyCanary
}

// +kubebuilder:object:root=true

// DeliveryPolicyList is a list of DeliveryPolicy.
type DeliveryPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DeliveryPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&DeliveryPolicy{}, &DeliveryPolicyList{})
}
