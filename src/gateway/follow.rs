//! One replica among several on a shared store: what the others commit is put in force
//! here too. Every replica's store tail publishes every replica's events in seq order;
//! this task reads them and updates the hot-path copies: holds created elsewhere (so an
//! approver here can resolve them and an identical retry here can run them), their
//! resolutions (so a client waiting here hears an approval given elsewhere), class edits
//! and listings, and policy versions. The rows are the truth; each step here reads them,
//! and applying an event this replica made itself changes nothing.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use super::Gateway;
use super::policy::PolicyEngine;
use crate::api::{Event, EventBody};

pub fn spawn(gw: Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(follow(gw))
}

async fn follow(gw: Arc<Gateway>) {
    let (mut events, _) = gw.store.subscribe();
    // What was committed before this task subscribed is read from the store once.
    let mut behind = resync(&gw).await.err();
    let mut catalog_stale = false;
    loop {
        // Out of step: calls are denied and /readyz says why, until a resync succeeds.
        gw.set_out_of_step(behind.as_ref().map(|e| e.to_string()));
        let retry = async {
            match behind {
                Some(_) => tokio::time::sleep(RETRY).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            next = events.recv() => next,
            () = retry => {
                behind = resync(&gw).await.err();
                continue;
            }
            () = gw.stopped() => return,
        };
        let outcome = match next {
            // Events that arrive while behind are covered by the resync that ends it.
            Ok(_) if behind.is_some() => Ok(()),
            Ok(published) => match serde_json::from_str::<Event>(&published.json) {
                Ok(event) if touches_catalog(&event.body) => {
                    // A listing of many tools is many events: the catalog is read again
                    // once the burst is through, not once per tool.
                    catalog_stale = true;
                    Ok(())
                }
                Ok(event) => apply(&gw, event).await,
                // A newer replica's event kind: nothing here depends on it.
                Err(_) => Ok(()),
            },
            // Events were missed: the store has them all.
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "fell behind the shared store's events; reading its state again"
                );
                resync(&gw).await
            }
            Err(RecvError::Closed) => return,
        };
        let outcome = match outcome {
            Ok(()) if catalog_stale && events.is_empty() => {
                catalog_stale = false;
                gw.catalog.reload().await.map_err(anyhow::Error::from)
            }
            other => other,
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, "cannot apply another replica's change; reading the store's state again");
            behind = resync(&gw).await.err();
            if let Some(e) = &behind {
                tracing::error!(error = %e, "cannot read the shared store's state; calls are denied until it can");
            }
        }
    }
}

/// How often a replica out of step tries to read the shared store's state again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

async fn apply(gw: &Gateway, event: Event) -> anyhow::Result<()> {
    match event.body {
        EventBody::HoldCreated { call_id, .. } => gw.holds.adopt(&call_id).await?,
        EventBody::HoldExtended {
            call_id,
            expires_at,
            ..
        } => gw.holds.extended_elsewhere(&call_id, &expires_at).await,
        EventBody::HoldApproval {
            call_id,
            by,
            reason,
            required,
            grant,
            ..
        } => {
            gw.holds
                .approval_elsewhere(
                    &call_id,
                    crate::api::HoldApproval {
                        by,
                        at: event.ts,
                        reason,
                        grant,
                    },
                    required,
                )
                .await
        }
        EventBody::HoldResolved {
            call_id,
            resolution,
            by,
            reason,
            ..
        } => {
            gw.holds
                .resolved_elsewhere(&call_id, resolution, &by, reason, &event.ts)
                .await
        }
        EventBody::PolicyChanged { version, .. } => catch_up_policy(gw, version).await?,
        EventBody::GrantCreated(grant) => gw.holds.grant_made(grant).await,
        EventBody::GrantRevoked { id, .. } => gw.holds.grants.ended(&id),
        _ => {}
    }
    Ok(())
}

/// Whether an event changes the catalog (a class, a listing).
fn touches_catalog(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::RiskChanged { .. }
            | EventBody::ToolDiscovered(_)
            | EventBody::ToolChanged { .. }
    )
}

/// Everything this replica copies, read from the store again.
async fn resync(gw: &Gateway) -> anyhow::Result<()> {
    gw.holds.adopt_all().await?;
    // Holds this replica knows that were resolved elsewhere while its events were
    // missed: their clients hear it now.
    gw.holds.refresh().await?;
    gw.holds.grants.reload().await?;
    gw.catalog.reload().await?;
    if let Some(current) = gw.store.current_policy().await? {
        catch_up_policy(gw, current.stored.version).await?;
    }
    Ok(())
}

/// Puts stored policy version `version` in force here, unless a newer one already is.
async fn catch_up_policy(gw: &Gateway, version: u64) -> anyhow::Result<()> {
    let _one_edit_at_a_time = gw.policy_edits.lock().await;
    if version <= gw.policy_version() {
        return Ok(());
    }
    let Some(stored) = gw.store.policy_version(version).await? else {
        anyhow::bail!("policy version {version} is not stored");
    };
    // It compiled on the replica that stored it; a replica of another build that cannot
    // compile it keeps the version it has, and says so loudly.
    let engine = PolicyEngine::compile(&stored.text)
        .map_err(|e| anyhow::anyhow!("policy version {version} does not compile here: {e}"))?;
    gw.replace_policy(engine, version);
    tracing::info!(version, by = %stored.stored.by, "policy version stored by another replica is in force");
    Ok(())
}
