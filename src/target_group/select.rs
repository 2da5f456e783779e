//! From a forward action and a request head to one target: group stickiness
//! (`AWSALBTG`), target stickiness (`AWSALB`, `AWSALBAPP-0`), then the group's algorithm;
//! and the cookies the response carries back.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::header::HeaderMap;

use super::registry::{InFlight, TargetGroupState};
use super::sticky::{self, CookieKind, StickyKey};
use super::{pick_group, GroupSet};
use crate::config::model::{Forward, Stickiness, TargetGroup};

/// The chosen target, held as in flight, and the cookies to set on the answer.
#[derive(Debug)]
pub struct Selection<'a> {
    pub in_flight: InFlight,
    pub cookies: CookiePlan<'a>,
}

/// Which stickiness cookies the response gets.
#[derive(Debug)]
pub struct CookiePlan<'a> {
    key: &'a StickyKey,
    group: &'a TargetGroupState,
    settings: &'a TargetGroup,
    target: SocketAddr,
    /// `AWSALBTG` duration when the forward action is sticky.
    group_stickiness: Option<Duration>,
    /// The request carried the application's cookie but its `AWSALBAPP` target could
    /// not be used: the session is stuck to the new target.
    app_restick: bool,
    /// The client is Chromium 80 or later (asked with application-cookie stickiness
    /// only, the one place it changes a cookie).
    chromium: bool,
}

impl GroupSet {
    /// Choose a group and a target for a request with head `headers`; `None` when the
    /// chosen group has nothing that can take traffic (503).
    pub fn select<'a>(&'a self, forward: &Forward, headers: &HeaderMap) -> Option<Selection<'a>> {
        let now = SystemTime::now();
        let group_id = forward
            .stickiness
            .and_then(|_| {
                let value = sticky::request_cookie(headers, "AWSALBTG")
                    .or_else(|| sticky::request_cookie(headers, "AWSALBTGCORS"))?;
                forward
                    .target_groups
                    .iter()
                    .filter(|g| g.weight > 0)
                    .find(|g| {
                        self.sticky
                            .opens_to_group(value, &self.groups[g.id.0].name, now)
                    })
                    .map(|g| g.id)
            })
            .or_else(|| pick_group(forward))?;
        let group = self.groups.get(group_id.0)?;
        let settings = self.settings.get(group_id.0)?;

        let mut had_app_cookie = false;
        let stuck_to = match &settings.stickiness {
            None => None,
            Some(Stickiness::LbCookie { .. }) => sticky::request_cookie(headers, "AWSALB")
                .or_else(|| sticky::request_cookie(headers, "AWSALBCORS"))
                .and_then(|v| self.sticky.open_target(CookieKind::Lb, &group.name, v, now)),
            Some(Stickiness::AppCookie { cookie_name, .. }) => {
                had_app_cookie = sticky::request_cookie(headers, cookie_name).is_some();
                sticky::request_cookie(headers, "AWSALBAPP-0")
                    .filter(|_| had_app_cookie)
                    .and_then(|v| {
                        self.sticky
                            .open_target(CookieKind::App, &group.name, v, now)
                    })
            }
        };
        let (target, honoured) = group.pick_with(stuck_to, settings)?;
        if stuck_to.is_some() && !honoured {
            tracing::debug!(
                target_group = %group.name,
                "The sticky target can no longer take traffic; the session moves to {}.",
                target.addr
            );
        }
        Some(Selection {
            cookies: CookiePlan {
                key: &self.sticky,
                group,
                settings,
                target: target.addr,
                group_stickiness: forward.stickiness,
                app_restick: had_app_cookie && !honoured,
                // Asked only where it matters: the application cookie's shards.
                chromium: matches!(settings.stickiness, Some(Stickiness::AppCookie { .. }))
                    && sticky::is_chromium_80_plus(headers),
            },
            in_flight: InFlight::new(target),
        })
    }
}

impl CookiePlan<'_> {
    /// Add the stickiness cookies to a response from the chosen target.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let stickiness = &self.settings.stickiness;
        if stickiness.is_none() && self.group_stickiness.is_none() {
            return;
        }
        let now = SystemTime::now();
        let expires = sticky::expires(now);
        if let Some(d) = self.group_stickiness {
            if let Some(v) = self.key.seal_group(&self.group.name, d, now) {
                sticky::set_cookie(headers, "AWSALBTG", &v, &expires, false);
                sticky::set_cookie(headers, "AWSALBTGCORS", &v, &expires, true);
            }
        }
        match stickiness {
            None => {}
            Some(Stickiness::LbCookie { duration }) => {
                let v = self.key.seal_target(
                    CookieKind::Lb,
                    &self.group.name,
                    self.target,
                    *duration,
                    now,
                );
                if let Some(v) = v {
                    sticky::set_cookie(headers, "AWSALB", &v, &expires, false);
                    sticky::set_cookie(headers, "AWSALBCORS", &v, &expires, true);
                }
            }
            Some(Stickiness::AppCookie {
                cookie_name,
                duration,
            }) => {
                if !(self.app_restick || sticky::response_sets_cookie(headers, cookie_name)) {
                    return;
                }
                let v = self.key.seal_target(
                    CookieKind::App,
                    &self.group.name,
                    self.target,
                    *duration,
                    now,
                );
                if let Some(v) = v {
                    sticky::set_cookie(headers, "AWSALBAPP-0", &v, &expires, self.chromium);
                    for shard in ["AWSALBAPP-1", "AWSALBAPP-2", "AWSALBAPP-3"] {
                        sticky::set_cookie(headers, shard, "_remove_", &expires, self.chromium);
                    }
                }
            }
        }
    }
}
