//! What a record of the table's stream says, in the item layout's terms: an audit event to
//! publish, a meter whose credits changed, or nothing the `events` function acts on.

use super::{event_from_item, meter_from_item, token_from_item, user_from_item, Item, Reader};
use super::{AUDIT_PREFIX, SK};
use crate::domain::{PlatformId, UserId};
use crate::limits::Meter;
use crate::store::Fault;
use crate::token::PublicTokenId;

/// One record of the table's stream (NEW_AND_OLD_IMAGES), whatever read it: the Lambda event
/// source mapping or a poller of the stream's shards.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    /// `INSERT`, `MODIFY` or `REMOVE`.
    pub event_name: String,
    /// The record's sequence number in its shard: what a failure is reported by.
    pub sequence: String,
    pub old: Option<Item>,
    pub new: Option<Item>,
}

/// A meter's credits before and after one write.
#[derive(Clone, Debug, PartialEq)]
pub struct MeterChange {
    pub platform_id: PlatformId,
    pub user_id: UserId,
    /// The token whose meter it is; `None`: the user's own.
    pub token_id: Option<PublicTokenId>,
    pub old: Meter,
    pub new: Meter,
}

/// What a stream record is, to the `events` function.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// A new audit event: its action and the event as the API shows it (compact JSON).
    Audit { action: String, event: String },
    /// A write to a metered record that kept its credits limit.
    Meter(MeterChange),
    /// Anything else.
    Nothing,
}

fn sort_key(item: &Item) -> Result<String, Fault> {
    Reader(item).string(SK)
}

/// What `record` says; a record whose item cannot be read is a fault (a poison record).
pub fn observe(record: &StreamRecord) -> Result<Observed, Fault> {
    let Some(new) = &record.new else {
        return Ok(Observed::Nothing);
    };
    let sk = sort_key(new)?;
    if sk.starts_with(AUDIT_PREFIX) {
        if record.event_name != "INSERT" {
            return Ok(Observed::Nothing);
        }
        let event = event_from_item(new)?;
        let action = event
            .get("action")
            .and_then(|a| a.as_str())
            .ok_or_else(|| super::corrupt("event", "an event with an action"))?
            .to_string();
        return Ok(Observed::Audit {
            action,
            event: event.to_string(),
        });
    }
    let Some(old) = &record.old else {
        return Ok(Observed::Nothing);
    };
    let meters = |item: &Item| meter_from_item(item);
    let (Some(old_meter), Some(new_meter)) = (meters(old)?, meters(new)?) else {
        return Ok(Observed::Nothing);
    };
    let (platform_id, user_id, token_id) = if sk == "PROFILE" {
        let user = user_from_item(new)?;
        (user.platform_id, user.id, None)
    } else if sk.starts_with("TOKEN#") {
        let token = token_from_item(new)?;
        (token.platform_id, token.user_id, Some(token.public_id()))
    } else {
        return Ok(Observed::Nothing);
    };
    Ok(Observed::Meter(MeterChange {
        platform_id,
        user_id,
        token_id,
        old: old_meter,
        new: new_meter,
    }))
}
