package controllers

import (
	"errors"
	"strings"
	"testing"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"k8s.io/utils/ptr"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

func TestViewRolloutCanaryWeight(t *testing.T) {
	policy := &deliveryv1.DeliveryPolicySpec{Canary: &deliveryv1.CanaryStrategy{Steps: []deliveryv1.CanaryStep{
		{SetWeight: ptr.To[int32](20)},
		{Pause: &deliveryv1.PauseStep{}},
		{SetWeight: ptr.To[int32](75)},
	}}}
	for step, want := range map[int32]int32{0: 0, 1: 20, 2: 20, 3: 100} {
		rollout := &rolloutsv1.Rollout{Status: rolloutsv1.RolloutStatus{
			Phase: rolloutsv1.RolloutPhaseProgressing, CurrentStepIndex: ptr.To(step),
		}}
		v := viewRollout(rollout, policy)
		if v.canaryWeight == nil || *v.canaryWeight != want {
			t.Errorf("at step %d the weight is %v, want %d", step, v.canaryWeight, want)
		}
	}
}

func TestViewRolloutGates(t *testing.T) {
	canary := &deliveryv1.DeliveryPolicySpec{Canary: &deliveryv1.CanaryStrategy{Steps: []deliveryv1.CanaryStep{
		{SetWeight: ptr.To[int32](20)},
		{Analysis: &deliveryv1.Analysis{Templates: []deliveryv1.AnalysisTemplateRef{{Name: "latency"}}}},
		{Pause: &deliveryv1.PauseStep{}},
	}}}
	blueGreen := &deliveryv1.DeliveryPolicySpec{BlueGreen: &deliveryv1.BlueGreenStrategy{ActiveService: "web"}}
	pause := func(reasons ...rolloutsv1.PauseReason) []rolloutsv1.PauseCondition {
		var out []rolloutsv1.PauseCondition
		for _, r := range reasons {
			out = append(out, rolloutsv1.PauseCondition{Reason: r})
		}
		return out
	}
	run := func(name string, phase rolloutsv1.AnalysisPhase) *rolloutsv1.RolloutAnalysisRunStatus {
		return &rolloutsv1.RolloutAnalysisRunStatus{Name: name, Status: phase}
	}
	tests := []struct {
		name             string
		policy           *deliveryv1.DeliveryPolicySpec
		status           rolloutsv1.RolloutStatus
		gate             *int32
		inconclusiveRun  string
		inconclusiveStep bool
	}{
		{
			name:   "manual gate",
			policy: canary,
			status: rolloutsv1.RolloutStatus{CurrentStepIndex: ptr.To[int32](2), PauseConditions: pause(rolloutsv1.PauseReasonCanaryPauseStep)},
			gate:   ptr.To[int32](2),
		},
		{
			name:   "analysis step running",
			policy: canary,
			status: rolloutsv1.RolloutStatus{CurrentStepIndex: ptr.To[int32](1),
				Canary: rolloutsv1.CanaryStatus{CurrentStepAnalysisRunStatus: run("web-1", rolloutsv1.AnalysisPhaseRunning)}},
		},
		{
			name:   "analysis step inconclusive",
			policy: canary,
			status: rolloutsv1.RolloutStatus{CurrentStepIndex: ptr.To[int32](1), PauseConditions: pause(rolloutsv1.PauseReasonInconclusiveAnalysis),
				Canary: rolloutsv1.CanaryStatus{CurrentStepAnalysisRunStatus: run("web-1", rolloutsv1.AnalysisPhaseInconclusive)}},
			gate: ptr.To[int32](1), inconclusiveRun: "web-1", inconclusiveStep: true,
		},
		{
			name:   "background analysis inconclusive",
			policy: canary,
			status: rolloutsv1.RolloutStatus{CurrentStepIndex: ptr.To[int32](0), PauseConditions: pause(rolloutsv1.PauseReasonInconclusiveAnalysis),
				Canary: rolloutsv1.CanaryStatus{CurrentBackgroundAnalysisRunStatus: run("web-bg", rolloutsv1.AnalysisPhaseInconclusive)}},
			gate: ptr.To[int32](0), inconclusiveRun: "web-bg",
		},
		{
			name:   "pre-promotion analysis inconclusive",
			policy: blueGreen,
			status: rolloutsv1.RolloutStatus{PauseConditions: pause(rolloutsv1.PauseReasonInconclusiveAnalysis),
				BlueGreen: rolloutsv1.BlueGreenStatus{PrePromotionAnalysisRunStatus: run("web-pre", rolloutsv1.AnalysisPhaseInconclusive)}},
			gate: ptr.To[int32](0), inconclusiveRun: "web-pre",
		},
		{
			name:   "aborted is no gate",
			policy: canary,
			status: rolloutsv1.RolloutStatus{Abort: true, CurrentStepIndex: ptr.To[int32](0), PauseConditions: pause(rolloutsv1.PauseReasonInconclusiveAnalysis)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := viewRollout(&rolloutsv1.Rollout{Status: tt.status}, tt.policy)
			if (v.gate == nil) != (tt.gate == nil) || v.gate != nil && *v.gate != *tt.gate {
				t.Errorf("gate = %v, want %v", ptr.Deref(v.gate, -1), ptr.Deref(tt.gate, -1))
			}
			if v.inconclusiveRun != tt.inconclusiveRun || v.inconclusiveStep != tt.inconclusiveStep {
				t.Errorf("inconclusive run %q (step analysis %v), want %q (%v)", v.inconclusiveRun, v.inconclusiveStep, tt.inconclusiveRun, tt.inconclusiveStep)
			}
		})
	}
}

func TestCommitMessage(t *testing.T) {
	data := map[string]any{"Hash": "0123456789", "Action": "promote"}
	if got, err := commitMessage("promote", "", "Promote web\n\n", data); err != nil || got != "Promote web" {
		t.Errorf("without a template: %q, %v; want the default without trailing newlines", got, err)
	}
	if got, err := commitMessage("promote", "Ship {{.Hash}}\n", "default", data); err != nil || got != "Ship 0123456789" {
		t.Errorf("with a template: %q, %v", got, err)
	}
	for _, tmpl := range []string{"Ship {{.Hash", "Ship {{.Delivery.Name}}"} {
		_, err := commitMessage("promote", tmpl, "default", data)
		if !errors.Is(err, gitops.ErrCannotEdit) || !strings.Contains(err.Error(), "the DeliveryPolicy's promote message template") {
			t.Errorf("template %q: %v; want ErrCannotEdit naming the template", tmpl, err)
		}
	}
}
