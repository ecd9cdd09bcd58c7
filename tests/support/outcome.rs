//! Assertions on a probe's [`Outcome`], with everything about it in the failure message.

use o365_mail_exporter::probe::{Outcome, Phase, Reason};

/// Everything about an outcome, for assertion messages.
pub fn explain(o: &Outcome) -> String {
    format!(
        "success={} reason={} phase={:?} detail={:?} phases={:?} tls={:?}\n{}",
        o.success,
        o.reason,
        o.failed_phase,
        o.detail,
        o.phases,
        o.tls,
        o.transcript.render_text()
    )
}

/// The probe failed in `phase` with `reason`.
pub fn assert_failed(o: &Outcome, phase: Phase, reason: Reason) {
    assert!(!o.success, "{}", explain(o));
    assert_eq!(
        (o.failed_phase, o.reason),
        (Some(phase), reason),
        "{}",
        explain(o)
    );
}
