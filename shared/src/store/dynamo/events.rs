//! The audit trail: an event's put in its change's transaction, and the trail's pages.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::TransactWriteItem;

use crate::audit::Event;
use crate::domain::UserId;
use crate::store::item::{
    event_from_item, event_item, s, user_partition, Key, AUDIT_INDEX, AUDIT_PLATFORM, AUDIT_PREFIX,
    PK, SK,
};
use crate::store::{AuditLog, EventCursor, EventPage, EventScope, Fault};

use super::core::*;
use super::DynamoStore;

impl DynamoStore {
    /// The put of `event` in a change's transaction (a new item: its id is unique).
    pub(super) fn event_put(&self, event: &Event) -> Result<TransactWriteItem, Fault> {
        let expires_at = event.at_us / 1_000_000 + self.audit_retention_days * 86_400;
        self.put(event_item(event, expires_at), "attribute_not_exists(pk)")
    }
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn list_events(
        &self,
        scope: EventScope,
        limit: u32,
        cursor: Option<&EventCursor>,
    ) -> Result<EventPage, Fault> {
        // One more than asked for: whether a next page exists, without an empty last page.
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .scan_index_forward(false)
            .limit(limit.saturating_add(1) as i32)
            .expression_attribute_values(":prefix", s(AUDIT_PREFIX));
        let mut start = cursor.map(|c| Key::event(c.user_id, &c.event_id).to_item());
        query = match scope {
            EventScope::User(user) => {
                if cursor.is_some_and(|c| c.user_id != user) {
                    // Another user's position: no event of this user follows it.
                    return Ok(EventPage::default());
                }
                query
                    .consistent_read(true)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":pk", s(user_partition(user)))
            }
            EventScope::Platform(platform) => {
                if let Some(start) = &mut start {
                    start.insert(AUDIT_PLATFORM.into(), s(platform.to_string()));
                }
                query
                    .index_name(AUDIT_INDEX)
                    .key_condition_expression("#platform = :platform AND begins_with(sk, :prefix)")
                    .expression_attribute_names("#platform", AUDIT_PLATFORM)
                    .expression_attribute_values(":platform", s(platform.to_string()))
            }
        };
        let output = query
            .set_exclusive_start_key(start)
            .send()
            .before_deadline()
            .await
            .map_err(unavailable)?;
        let mut items = output.items.unwrap_or_default();
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next = match items.last() {
            Some(last) if more => {
                let user = last
                    .get(PK)
                    .and_then(|pk| pk.as_s().ok())
                    .and_then(|pk| pk.strip_prefix("USER#"))
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| Fault::Corrupt("an event outside a user's partition".into()))?;
                let event = last
                    .get(SK)
                    .and_then(|sk| sk.as_s().ok())
                    .and_then(|sk| sk.strip_prefix(AUDIT_PREFIX))
                    .ok_or_else(|| Fault::Corrupt("an event without its id".into()))?;
                Some(EventCursor {
                    user_id: UserId(user),
                    event_id: event.to_string(),
                })
            }
            _ => None,
        };
        Ok(EventPage {
            events: items
                .iter()
                .map(event_from_item)
                .collect::<Result<_, _>>()?,
            next,
        })
    }
}
