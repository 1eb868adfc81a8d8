//! The simulated ticker: a random walk of prices, clearly labelled
//! `"simulated":true`, published through the hub's one publish path (so it is
//! stored in history like any publication).
//!
//! Every `interval_ms`, each symbol gets a new price, published to
//! `ticker:SYMBOL` as
//! `{"symbol":"AAPL","price":187.42,"change":0.31,"change_percent":0.17,"simulated":true}`,
//! `change` being against the symbol's previous price. After a restart the
//! walk goes on from the last stored price.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// Where a symbol's walk starts when it has no history.
fn start_price(symbol: &str) -> f64 {
    match symbol {
        "AAPL" => 190.0,
        "MSFT" => 420.0,
        "GOOG" => 170.0,
        "AMZN" => 185.0,
        "TSLA" => 250.0,
        "NVDA" => 120.0,
        _ => 100.0,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One step of the walk: a move of at most 0.5% either way, never below 1.
pub fn step(price: f64, unit: f64) -> f64 {
    round2((price * (1.0 + (unit * 2.0 - 1.0) * 0.005)).max(1.0))
}

/// The data of one tick.
pub fn tick(symbol: &str, previous: f64, price: f64) -> serde_json::Value {
    let change = round2(price - previous);
    let change_percent = if previous > 0.0 {
        round2(change / previous * 100.0)
    } else {
        0.0
    };
    json!({
        "symbol": symbol,
        "price": price,
        "change": change,
        "change_percent": change_percent,
        "simulated": true,
    })
}

/// Runs the feed until `stop` is cancelled (does nothing if disabled).
pub async fn run(hub: Arc<Hub>, stop: CancellationToken) {
    let config = hub.config().feed.clone();
    if !config.enabled {
        return;
    }
    let mut seed = [0u8; 32];
    let _ = getrandom::fill(&mut seed);
    let mut rng = ChaCha12Rng::from_seed(seed);
    let mut symbols = Vec::new();
    for symbol in &config.symbols {
        let name = format!("{}:{symbol}", config.namespace);
        let Ok((channel, namespace)) = hub.channel(&name) else {
            tracing::warn!(channel = name, "feed: not a valid channel, skipped");
            continue;
        };
        let namespace = namespace.clone();
        let last = last_price(&hub, &name)
            .await
            .unwrap_or_else(|| start_price(symbol));
        symbols.push((symbol.clone(), channel, namespace, last));
    }
    let every = Duration::from_millis(config.interval_ms);
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // With several nodes, one feeds at a time: the holder of the lease.
    let lease = (every * 4).max(Duration::from_secs(3));
    let mut holding = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        if !hub.engine().hold_lease("feed", lease).await {
            holding = false;
            continue;
        }
        if !holding {
            // Taking over: the walk goes on from the last published prices.
            holding = true;
            for (_, channel, _, price) in &mut symbols {
                if let Some(last) = last_price(&hub, channel.as_str()).await {
                    *price = last;
                }
            }
        }
        // One tick of every symbol at once: the writer commits them together.
        let mut ticks = Vec::with_capacity(symbols.len());
        for (symbol, channel, namespace, price) in &mut symbols {
            let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let next = step(*price, unit);
            ticks.push((&*channel, &*namespace, tick(symbol, *price, next)));
            *price = next;
        }
        let published = ticks
            .iter()
            .map(|(channel, namespace, data)| hub.publish(channel, namespace, data));
        for (result, (channel, _, _)) in join_all(published).await.into_iter().zip(&ticks) {
            if let Err(err) = result {
                tracing::warn!(%err, %channel, "feed: publish failed");
            }
        }
    }
}

/// The price of the newest stored tick of `channel`.
async fn last_price(hub: &Arc<Hub>, channel: &str) -> Option<f64> {
    let engine = hub.engine();
    let upto = engine.last_offset(channel).await.ok()?;
    let newest = engine.newest(channel, u64::MAX, upto, 0, 1).await.ok()?;
    let data: serde_json::Value = serde_json::from_str(&newest.first()?.data).ok()?;
    data["price"].as_f64().filter(|p| *p > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_stays_close_and_positive() {
        assert_eq!(step(100.0, 0.5), 100.0);
        assert_eq!(step(100.0, 1.0), 100.5);
        assert_eq!(step(100.0, 0.0), 99.5);
        assert_eq!(step(1.0, 0.0), 1.0);
    }

    #[test]
    fn tick_is_labelled_simulated() {
        let t = tick("AAPL", 100.0, 100.5);
        assert_eq!(t["symbol"], "AAPL");
        assert_eq!(t["price"], 100.5);
        assert_eq!(t["change"], 0.5);
        assert_eq!(t["change_percent"], 0.5);
        assert_eq!(t["simulated"], true);
    }
}
