//! Error text for people: one line with every cause, for log lines and
//! for the `errorMessage` a function reports.

/// `error: cause: cause ...`, skipping a cause whose text the line already
/// holds (some errors repeat their source in their own message, and SDK
/// errors say `service error` at the top and the reason further down).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer ({0})")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("top")]
    struct Top(#[source] Repeats);

    #[test]
    fn every_cause_is_said_once() {
        let error = Top(Repeats(std::io::Error::other("disk")));
        assert_eq!(chain(&error), "top: outer (disk)");
        assert_eq!(chain(&std::io::Error::other("alone")), "alone");
    }
}
