//! Negotiation of one session's connection: the server is the only
//! offerer, one offer in flight at a time, rolled back and made again when
//! unanswered; the browser's answers, candidates (judged by the candidate
//! policy) and requests for an ICE restart.

use super::*;

impl Actor {
    /// The browser asks for an ICE restart (its network changed): the next
    /// offer carries new credentials.
    pub(super) fn on_restart_request(&mut self) {
        // One restart per RESTART_EVERY at most, however often a page
        // asks (each makes an offer); an offer in flight is answered
        // first, then the restart follows.
        let now = Instant::now();
        if self.last_restart.is_some_and(|at| now.duration_since(at) < RESTART_EVERY) {
            return;
        }
        self.last_restart = Some(now);
        metrics::counter!(crate::metrics::ICE_RESTARTS).increment(1);
        tracing::info!(room = %self.code, session = %self.id, "ICE restart asked");
        self.restart_ice = true;
        self.dirty = true;
        // The browser gathers anew: its new candidates get a fresh allowance.
        self.remote_candidates = 0;
    }

    /// A browser ICE candidate: used when the policy allows it.
    pub(super) async fn on_candidate(&mut self, c: IceCandidate) {
        // The empty candidate marks the end of the browser's list.
        if c.candidate.is_empty() {
            return;
        }
        let Some(pc) = &self.pc else { return };
        if let Err(why) = self.shared.config.candidates.judge(&c, self.remote_candidates) {
            metrics::counter!(crate::metrics::REMOTE_CANDIDATES, "verdict" => "refused").increment(1);
            tracing::debug!(session = %self.id, ?why, "remote candidate not used");
            return;
        }
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_m_line_index,
            username_fragment: c.username_fragment,
            ..Default::default()
        };
        match pc.add_ice_candidate(init).await {
            Ok(()) => {
                self.remote_candidates += 1;
                metrics::counter!(crate::metrics::REMOTE_CANDIDATES, "verdict" => "accepted").increment(1);
            }
            Err(e) => {
                metrics::counter!(crate::metrics::REMOTE_CANDIDATES, "verdict" => "refused").increment(1);
                tracing::debug!(session = %self.id, error = %e, "remote candidate refused");
            }
        }
    }

    pub(super) async fn maybe_offer(&mut self) {
        if !self.dirty || self.offer.is_some() || self.signal.is_none() {
            return;
        }
        let Some(pc) = self.pc.clone() else { return };
        self.dirty = false;
        let restart = std::mem::take(&mut self.restart_ice);
        let deadline = Instant::now() + self.shared.config.offer_timeout;
        let made = async {
            let options = restart.then_some(RTCOfferOptions { ice_restart: true });
            let offer = pc.create_offer(options).await?;
            pc.set_local_description(offer).await?;
            let mut sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
            // The browser is asked for its camera in layers; the engine
            // takes only its own offer as the local description, and what
            // it receives follows the answer's rids either way.
            if let Some(mid) = self.camera_mid(&pc).await.filter(|_| self.shared.config.simulcast) {
                sdp = simulcast::offer_simulcast(&sdp, &mid);
            }
            Ok::<_, MediaError>(self.shared.config.announce.sdp(&sdp))
        }
        .await;
        match made {
            Ok(sdp) => {
                self.send_browser(ServerMsg::Offer { sdp: sdp.clone() });
                let covers = self.forwarders.keys().cloned().collect();
                self.offer = Some(InFlight { deadline, sdp, covers });
                tracing::debug!(room = %self.code, session = %self.id, "offer sent");
            }
            Err(e) => {
                tracing::warn!(room = %self.code, session = %self.id, error = %e, "offer not made; retrying");
                self.rollback().await;
                self.dirty = true;
                // Retry at the next deadline rather than spinning.
                self.offer = Some(InFlight { deadline, sdp: String::new(), covers: Vec::new() });
            }
        }
    }

    /// The camera transceiver's mid (known once it was first offered).
    async fn camera_mid(&self, pc: &Arc<dyn PeerConnection>) -> Option<String> {
        let camera = self.camera?;
        for t in pc.get_transceivers().await {
            if t.id() == camera {
                return t.mid().await.ok().flatten();
            }
        }
        None
    }

    async fn rollback(&mut self) {
        let Some(pc) = &self.pc else { return };
        match RTCSessionDescription::rollback(None) {
            Ok(desc) => {
                if let Err(e) = pc.set_local_description(desc).await {
                    tracing::debug!(session = %self.id, error = %e, "rollback refused");
                }
            }
            Err(e) => tracing::debug!(session = %self.id, error = %e, "rollback not built"),
        }
    }

    pub(super) async fn offer_timed_out(&mut self) {
        if self.offer.take().is_some_and(|o| !o.sdp.is_empty()) {
            tracing::warn!(room = %self.code, session = %self.id, "offer unanswered; rolling back and offering again");
            self.rollback().await;
        }
        self.dirty = true;
    }

    pub(super) async fn on_answer(&mut self, sdp: String) {
        let Some(pc) = self.pc.clone() else { return };
        let Some(offer) = self.offer.take() else {
            tracing::warn!(session = %self.id, "answer without an offer in flight; ignored");
            return;
        };
        // After the first, an answer must not make the engine forget the
        // camera's layers (see `simulcast::keep_layers`).
        let sdp = match (self.camera_answered, self.camera_mid(&pc).await) {
            (true, Some(mid)) => simulcast::keep_layers(&sdp, &mid),
            _ => sdp,
        };
        let applied = match RTCSessionDescription::answer(sdp) {
            Ok(desc) => pc.set_remote_description(desc).await,
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            tracing::warn!(room = %self.code, session = %self.id, error = %e, "answer refused; offering again");
            self.rollback().await;
            self.dirty = true;
            return;
        }
        self.camera_answered = true;
        // New forwarders now have a negotiated sender: learn the payload
        // type and ask their publishers for a keyframe.
        for forwarder in offer.covers.iter().filter_map(|id| self.forwarders.get(id)) {
            if forwarder.negotiated().await {
                forwarder.request_keyframe();
            }
        }
    }
}
