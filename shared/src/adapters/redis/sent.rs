//! The form of one entry of `stream:sent:{c}` (DESIGN §12 "Cursor and
//! change log"): what a connection was last sent of one user.

use crate::ports::Sent;

/// `seq:version:at_ms:digest:shape:next_at` (`next_at` empty for none) as
/// a [`Sent`]; the four-part form of earlier releases without `shape`, so
/// never held against; `None` for anything else (then the entry counts as
/// never sent, and goes out again).
pub(crate) fn decode_sent(raw: &str) -> Option<Sent> {
    let mut parts = raw.split(':');
    let mut sent = Sent {
        seq: parts.next()?.parse().ok()?,
        version: parts.next()?.parse().ok()?,
        at_ms: parts.next()?.parse().ok()?,
        digest: parts.next()?.parse().ok()?,
        shape: None,
        next_at: None,
    };
    if let Some(shape) = parts.next() {
        sent.shape = Some(shape.parse().ok()?);
        sent.next_at = match parts.next()? {
            "" => None,
            at => Some(at.parse().ok()?),
        };
    }
    parts.next().is_none().then_some(sent)
}

pub(crate) fn encode_sent(sent: &Sent) -> String {
    let head = format!("{}:{}:{}:{}", sent.seq, sent.version, sent.at_ms, sent.digest);
    match sent.shape {
        Some(shape) => format!("{head}:{shape}:{}", sent.next_at.map(|at| at.to_string()).unwrap_or_default()),
        None => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_state_reads_both_forms_and_nothing_else() {
        let new = Sent { seq: 3, version: 7, at_ms: 100, digest: 9, shape: Some(11), next_at: Some(400) };
        assert_eq!(decode_sent(&encode_sent(&new)), Some(new));
        let no_next = Sent { next_at: None, ..new };
        assert_eq!(encode_sent(&no_next), "3:7:100:9:11:");
        assert_eq!(decode_sent("3:7:100:9:11:"), Some(no_next));
        // An earlier release's form: never held against.
        let old = decode_sent("3:7:100:9").unwrap();
        assert_eq!((old.shape, old.shown()), (None, None));
        for bad in ["", "3:7:100", "3:7:100:9:11", "3:7:100:9:x:1", "3:7:100:9:11:1:2", "3:7:100:9:11:y"] {
            assert_eq!(decode_sent(bad), None, "{bad}");
        }
    }
}
