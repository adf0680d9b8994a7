//! Records as the poller keeps them (DESIGN §9): detached from the
//! consumer, with header names decoded as Lambda's event source decodes
//! them.
//!
//! rdkafka's own header accessors turn each name into `&str` with an
//! `unwrap`, so one record whose header name is not UTF-8 (a producer may
//! send any bytes) would panic the worker of its partition, and again after
//! every restart: the partition would stop for good. Kafka's Java client,
//! which MSK's event source uses, decodes a name as `new String(bytes,
//! UTF_8)`, replacing each malformed sequence with U+FFFD. So the names are
//! read here from librdkafka as bytes and decoded the same way; values are
//! bytes either way.

use std::ffi::CStr;

use rdkafka::bindings as rdsys;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders, OwnedMessage};

/// `message` as an [`OwnedMessage`] whose header names are valid UTF-8
/// (lossily decoded, see the module docs); never panics.
pub fn detach(message: &BorrowedMessage<'_>) -> OwnedMessage {
    OwnedMessage::new(
        message.payload().map(<[u8]>::to_vec),
        message.key().map(<[u8]>::to_vec),
        message.topic().to_owned(),
        message.timestamp(),
        message.partition(),
        message.offset(),
        headers(message),
    )
}

/// The headers of `message`, in order, or `None` when it has none.
fn headers(message: &BorrowedMessage<'_>) -> Option<OwnedHeaders> {
    let mut native: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is the live librdkafka message `message`
    // wraps. On success librdkafka points `native` at the message's own
    // header list, which lives as long as the message (borrowed here).
    let err = unsafe { rdsys::rd_kafka_message_headers(message.ptr(), &mut native) };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || native.is_null() {
        return None;
    }
    // SAFETY: `native` is the valid header list obtained above.
    let count = unsafe { rdsys::rd_kafka_header_cnt(native) };
    let mut owned = OwnedHeaders::new_with_capacity(count);
    for idx in 0..count {
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const std::os::raw::c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `idx` is below the list's count; librdkafka sets `name`
        // to a NUL-terminated string and `value` to `size` bytes (or null
        // for a header without a value), both owned by the list.
        let err = unsafe { rdsys::rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: as above; both are copied before the message goes.
        let key = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        let bytes = (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
        owned = owned.insert(Header { key: &key, value: bytes });
    }
    Some(owned)
}
