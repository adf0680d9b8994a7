//! Redis Cluster without a cluster client: the slot of a key, the slot map
//! read with `CLUSTER SLOTS`, and seed URLs. The service routes its own
//! pipelines so a bulk call becomes one pipeline per node, all nodes in
//! parallel; redis-rs's cluster pipelines must stay within one slot.

use redis::Value;

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The slot of `key`: only the part inside the first non-empty `{...}`
/// counts, which is why every key of one user shares a slot.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|b| *b == b'}').filter(|close| *close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// Which primary serves which slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// `(first, last, "host:port")`, sorted by `first`.
    ranges: Vec<(u16, u16, String)>,
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply.
    pub fn from_cluster_slots(reply: &Value) -> Result<Self, String> {
        let Value::Array(entries) = reply else { return Err("CLUSTER SLOTS did not answer an array".into()) };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(parts) = entry else { return Err("a slot range is not an array".into()) };
            let int = |v: Option<&Value>| match v {
                Some(Value::Int(n)) => u16::try_from(*n).map_err(|_| "slot out of range".to_owned()),
                _ => Err("slot bound is not an integer".to_owned()),
            };
            let (first, last) = (int(parts.first())?, int(parts.get(1))?);
            let Some(Value::Array(primary)) = parts.get(2) else { return Err("slot range has no primary".into()) };
            let host = match primary.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return Err("primary has no host".into()),
            };
            let port = match primary.get(1) {
                Some(Value::Int(p)) => *p,
                _ => return Err("primary has no port".into()),
            };
            ranges.push((first, last, format!("{host}:{port}")));
        }
        ranges.sort();
        Ok(Self { ranges })
    }

    /// The primary serving `slot`, if the map covers it.
    pub fn node_for(&self, slot: u16) -> Option<&str> {
        let at = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (first, last, node) = self.ranges.get(at.checked_sub(1)?)?;
        (*first <= slot && slot <= *last).then_some(node.as_str())
    }

    pub fn nodes(&self) -> Vec<&str> {
        let mut nodes: Vec<&str> = self.ranges.iter().map(|(_, _, n)| n.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}

/// Splits a cluster URL (`redis+cluster://h1:p1,h2:p2` or
/// `rediss+cluster://user:pass@h1:p1`) into plain per-node seed URLs, or
/// `None` for a single-node URL.
pub fn cluster_seeds(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("://")?;
    let base = scheme.strip_suffix("+cluster")?;
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.split('/').next().unwrap_or(hosts);
    Some(hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("{base}://{auth}{h}")).collect())
}

/// The seed URL rewritten for another node, keeping scheme and credentials.
pub fn node_url(seed: &str, node: &str) -> String {
    match seed.split_once("://") {
        Some((scheme, rest)) => {
            let auth = rest.rsplit_once('@').map(|(auth, _)| format!("{auth}@")).unwrap_or_default();
            format!("{scheme}://{auth}{node}")
        }
        None => format!("redis://{node}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Reference values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"status:{42}"), key_slot(b"42"));
        assert_eq!(key_slot(b"status:visible:{42}"), key_slot(b"status:{42}"));
        assert_eq!(key_slot(b"a{}b"), key_slot(b"a{}b"), "an empty tag hashes the whole key");
    }

    #[test]
    fn the_slot_map_finds_each_slots_primary() {
        let node = |host: &str, port: i64| Value::Array(vec![Value::BulkString(host.into()), Value::Int(port)]);
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("127.0.0.1", 7001)]),
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("127.0.0.1", 7000)]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node("127.0.0.1", 7002)]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply).unwrap();
        assert_eq!(map.node_for(0), Some("127.0.0.1:7000"));
        assert_eq!(map.node_for(5461), Some("127.0.0.1:7001"));
        assert_eq!(map.node_for(16383), Some("127.0.0.1:7002"));
        assert_eq!(map.nodes().len(), 3);
    }

    #[test]
    fn cluster_urls_become_seed_urls() {
        assert_eq!(cluster_seeds("redis://h:1"), None);
        assert_eq!(
            cluster_seeds("rediss+cluster://u:p@h1:1,h2:2"),
            Some(vec!["rediss://u:p@h1:1".to_owned(), "rediss://u:p@h2:2".to_owned()])
        );
        assert_eq!(node_url("rediss://u:p@h1:1", "10.0.0.9:6379"), "rediss://u:p@10.0.0.9:6379");
    }
}
