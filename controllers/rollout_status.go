package controllers

import (
	"fmt"
	"strconv"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// rolloutView is what sluice reads from a Rollout's status, in sluice's
// words.
type rolloutView struct {
	// runningHash is the template hash of the Rollout's spec.template.
	runningHash string
	// observed says Argo Rollouts has seen the Rollout's current spec.
	observed bool
	// healthy says every replica runs the current template and it is
	// stable.
	healthy bool
	// available counts the Rollout's available replicas.
	available int32

	aborted      bool
	abortMessage string
	// failedAnalysisRun names the AnalysisRun that failed, if one did.
	failedAnalysisRun string

	// gate is set when the Rollout waits at a manual gate, or paused on an
	// inconclusive analysis.
	gate *int32
	// inconclusiveRun names the AnalysisRun that ended Inconclusive when
	// the gate is an inconclusive analysis.
	inconclusiveRun string
	// inconclusiveStep says the inconclusive run is the current step's
	// analysis, which Argo's promote passes by going to the next step.
	inconclusiveStep bool

	currentStep  *int32
	canaryWeight *int32
}

// viewRollout interprets a Rollout's status for the given policy.
func viewRollout(rollout *rolloutsv1.Rollout, policy *deliveryv1.DeliveryPolicySpec) rolloutView {
	st := rollout.Status
	v := rolloutView{
		runningHash: rollout.Spec.Template.Annotations[templateHashAnnotation],
		observed:    st.ObservedGeneration == strconv.FormatInt(rollout.Generation, 10),
		available:   st.AvailableReplicas,
		aborted:     st.Abort,
	}
	v.healthy = v.observed && !st.Abort && st.Phase == rolloutsv1.RolloutPhaseHealthy &&
		st.StableRS != "" && st.StableRS == st.CurrentPodHash

	if st.Abort {
		v.abortMessage = st.Message
		for _, run := range []*rolloutsv1.RolloutAnalysisRunStatus{
			st.Canary.CurrentStepAnalysisRunStatus,
			st.Canary.CurrentBackgroundAnalysisRunStatus,
			st.BlueGreen.PrePromotionAnalysisRunStatus,
			st.BlueGreen.PostPromotionAnalysisRunStatus,
		} {
			if run != nil && (run.Status == rolloutsv1.AnalysisPhaseFailed || run.Status == rolloutsv1.AnalysisPhaseError) {
				v.failedAnalysisRun = run.Name
				break
			}
		}
	}

	if policy.Canary != nil && !v.healthy && !st.Abort && st.CurrentStepIndex != nil {
		step := *st.CurrentStepIndex
		v.currentStep = &step
		steps := policy.Canary.Steps
		if st.Canary.Weights != nil && policy.Canary.TrafficRouting != nil {
			w := st.Canary.Weights.Canary.Weight
			v.canaryWeight = &w
		} else {
			// A replica-based canary runs at the weight of the last
			// setWeight it passed, and at 100 once past the last step.
			var w int32
			for i := int32(0); i < step && int(i) < len(steps); i++ {
				if steps[i].SetWeight != nil {
					w = *steps[i].SetWeight
				}
			}
			if int(step) >= len(steps) {
				w = 100
			}
			v.canaryWeight = &w
		}
		if int(step) < len(steps) && steps[step].Pause != nil && steps[step].Pause.Duration == "" &&
			hasPause(st, rolloutsv1.PauseReasonCanaryPauseStep) {
			v.gate = &step
		}
	}
	if policy.BlueGreen != nil && hasPause(st, rolloutsv1.PauseReasonBlueGreenPause) {
		v.gate = new(int32)
	}
	// Argo pauses a Rollout whose analysis ends Inconclusive until someone
	// promotes it: a gate like a manual one, at the step it stopped at.
	if !st.Abort && hasPause(st, rolloutsv1.PauseReasonInconclusiveAnalysis) {
		step := int32(0)
		if policy.Canary != nil && st.CurrentStepIndex != nil {
			step = *st.CurrentStepIndex
		}
		v.gate = &step
		for _, run := range []*rolloutsv1.RolloutAnalysisRunStatus{
			st.Canary.CurrentStepAnalysisRunStatus,
			st.Canary.CurrentBackgroundAnalysisRunStatus,
			st.BlueGreen.PrePromotionAnalysisRunStatus,
			st.BlueGreen.PostPromotionAnalysisRunStatus,
		} {
			if run != nil && run.Status == rolloutsv1.AnalysisPhaseInconclusive {
				v.inconclusiveRun = run.Name
				v.inconclusiveStep = run == st.Canary.CurrentStepAnalysisRunStatus
				break
			}
		}
	}
	return v
}

func hasPause(st rolloutsv1.RolloutStatus, reason rolloutsv1.PauseReason) bool {
	for _, c := range st.PauseConditions {
		if c.Reason == reason {
			return true
		}
	}
	return false
}

// approvalFor returns the approval in spec for the candidate at step, and
// a description of the approvals that do not match, if any.
func approvalFor(delivery *deliveryv1.Delivery, candidate string, step int32) (bool, string) {
	var other string
	for _, a := range delivery.Spec.Promotion.Approvals {
		if a.TemplateHash == candidate && a.Step == step {
			return true, ""
		}
		other = fmt.Sprintf("spec.promotion.approvals approves template %s at step %d, not the candidate %s waiting at step %d",
			a.TemplateHash, a.Step, candidate, step)
	}
	return false, other
}
