//! Faults that DynamoDB produces and DynamoDB Local does not, injected into a client's next
//! calls by an SDK interceptor ([`FaultInjector`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

/// One injected fault, for one attempt of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request commits, then its answer is lost: the client sees a timeout.
    CommittedAnswerLost,
    /// The transaction is cancelled with this reason on every item; nothing commits.
    Cancelled(&'static str),
    /// `TransactionInProgressException`; nothing commits.
    InProgress,
    /// A single-item write refused with `TransactionConflictException` (a transaction holds
    /// the item); nothing commits.
    Conflict,
    /// The connection fails (a dispatch failure, as when DynamoDB restarts): nothing of this
    /// attempt commits, and the client cannot tell whether it was sent.
    ConnectionFailed,
}

/// Which operation a fault is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    TransactWriteItems,
    UpdateItem,
    PutItem,
}

/// Injects planned faults into the next matching attempts, in order; counts them.
#[derive(Clone, Debug, Default)]
pub struct FaultInjector {
    planned: Arc<Mutex<VecDeque<(Operation, Fault)>>>,
    injected: Arc<AtomicUsize>,
}

/// Counts the calls a client makes (not their retried attempts), by operation name.
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<Mutex<std::collections::BTreeMap<String, usize>>>);

impl CallCounter {
    /// Calls per operation (`BatchGetItem`, `TransactWriteItems`, ...).
    pub fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        self.0.lock().unwrap().clone()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_serialization(
        &self,
        _: &BeforeSerializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("unknown", |metadata| metadata.name())
            .to_string();
        *self.0.lock().unwrap().entry(operation).or_default() += 1;
        Ok(())
    }
}

impl FaultInjector {
    /// Plans `fault` for the next attempt of `operation`.
    pub fn plan(&self, operation: Operation, fault: Fault) {
        self.planned.lock().unwrap().push_back((operation, fault));
    }

    /// How many planned faults were injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    /// How many planned faults are still waiting for their operation.
    pub fn pending(&self) -> usize {
        self.planned.lock().unwrap().len()
    }

    /// Drops the planned faults not injected yet.
    pub fn clear(&self) {
        self.planned.lock().unwrap().clear();
    }
}

/// The operation of the running call and its item count.
#[derive(Clone, Debug)]
struct Call(Option<Operation>, usize);
impl Storable for Call {
    type Storer = StoreReplace<Self>;
}

/// The fault the current attempt carries.
#[derive(Clone, Debug)]
struct Carried(Option<Fault>);
impl Storable for Carried {
    type Storer = StoreReplace<Self>;
}

fn error_body(kind: &str, extra: &str) -> String {
    format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"injected by a test"{extra}}}"#
    )
}

impl Intercept for FaultInjector {
    fn name(&self) -> &'static str {
        "FaultInjector"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        let call = if let Some(t) = input.downcast_ref::<TransactWriteItemsInput>() {
            Call(
                Some(Operation::TransactWriteItems),
                t.transact_items().len(),
            )
        } else if input.downcast_ref::<UpdateItemInput>().is_some() {
            Call(Some(Operation::UpdateItem), 1)
        } else if input.downcast_ref::<PutItemInput>().is_some() {
            Call(Some(Operation::PutItem), 1)
        } else {
            Call(None, 0)
        };
        cfg.interceptor_state().store_put(call);
        Ok(())
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Call>().and_then(|c| c.0);
        let fault = {
            let mut planned = self.planned.lock().unwrap();
            match planned.front() {
                Some((op, _)) if Some(*op) == operation => planned.pop_front().map(|p| p.1),
                _ => None,
            }
        };
        if fault.is_some_and(|f| f != Fault::CommittedAnswerLost) {
            // Nothing may commit: send a harmless read instead, whose answer is replaced.
            let request = context.request_mut();
            request
                .headers_mut()
                .insert("x-amz-target", "DynamoDB_20120810.DescribeLimits");
            request.headers_mut().insert("content-length", "2");
            *request.body_mut() = SdkBody::from("{}");
        }
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        cfg.interceptor_state().store_put(Carried(fault));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let items = cfg.load::<Call>().map_or(0, |c| c.1);
        let body = match cfg.load::<Carried>().and_then(|c| c.0) {
            Some(Fault::Cancelled(reason)) => {
                let reasons = vec![format!(r#"{{"Code":"{reason}"}}"#); items].join(",");
                error_body(
                    "TransactionCanceledException",
                    &format!(r#","CancellationReasons":[{reasons}]"#),
                )
            }
            Some(Fault::InProgress) => error_body("TransactionInProgressException", ""),
            Some(Fault::Conflict) => error_body("TransactionConflictException", ""),
            Some(Fault::CommittedAnswerLost | Fault::ConnectionFailed) | None => return Ok(()),
        };
        let response = context.response_mut();
        *response.status_mut() = 400u16.try_into().expect("a status");
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        response.headers_mut().remove("content-length");
        response.headers_mut().remove("x-amz-crc32");
        *response.body_mut() = SdkBody::from(body);
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let lost = match cfg.load::<Carried>().and_then(|c| c.0) {
            Some(Fault::CommittedAnswerLost) => Some(OrchestratorError::timeout(
                "injected: the request committed and its answer was lost".into(),
            )),
            Some(Fault::ConnectionFailed) => Some(OrchestratorError::connector(
                ConnectorError::io("injected: the connection failed".into()),
            )),
            _ => None,
        };
        if let (Some(error), Some(result)) = (lost, context.output_or_error_mut()) {
            *result = Err(error);
        }
        cfg.interceptor_state().store_put(Carried(None));
        Ok(())
    }
}
