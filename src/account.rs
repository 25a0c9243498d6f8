//! One customer account: its webhook preferences, its campaigns' switches, and the audit log of
//! changes to both.

use crate::limits::AUDIT_LOG_CAPACITY;
use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::campaign::{SendDecision, decide};
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId};
use crate::preferences::{
    AuditRecord, Preferences, PreferencesUpdate, Principal, StoredPreferences,
};

/// A copy of a customer account's saved webhook settings: preferences, campaign switches and
/// audit log, as [`Webhooks::account`](crate::Webhooks::account) and
/// [`Webhooks::list_accounts`](crate::Webhooks::list_accounts) give them. Read only.
///
/// Settings change one way, saved before the call returns:
/// [`Webhooks::update_preferences`](crate::Webhooks::update_preferences) and
/// [`Webhooks::set_campaign_webhook`](crate::Webhooks::set_campaign_webhook) (or
/// [`Webhooks::put_settings`](crate::Webhooks::put_settings) for a dialer that keeps its
/// accounts itself). Each takes the [`Principal`] asking; only a full administrator may make
/// a change, anyone else gets [`Error::PermissionDenied`] and nothing changes.
///
/// # Examples
///
/// ```
/// use call_result_webhook::{
///     MemoryStore, PreferencesUpdate, Principal, Webhooks, campaign::{OffReason, SendDecision},
/// };
///
/// let webhooks = Webhooks::builder().store(MemoryStore::new()).build()?;
/// let (admin, acme) = (Principal::administrator("alice"), "acme".into());
/// let update = PreferencesUpdate::new().enabled(true).url("https://crm.example/hook");
/// webhooks.update_preferences_blocking(&admin, &acme, update)?;
/// webhooks.set_campaign_webhook_blocking(&admin, &acme, &"winter-sale".into(), true)?;
///
/// let account = webhooks.account(&acme).expect("saved");
/// assert_eq!(account.decide(&"winter-sale".into()), SendDecision::Send);
/// assert_eq!(account.decide(&"spring".into()), SendDecision::Skip(OffReason::CampaignDisabled));
/// assert_eq!(account.audit_log().len(), 2);
///
/// let agent = Principal::user("bob");
/// let refused = webhooks.update_preferences_blocking(&agent, &acme, PreferencesUpdate::new().enabled(false));
/// assert!(refused.is_err());
/// assert!(webhooks.account(&acme).expect("saved").preferences().enabled());
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Account {
    id: AccountId,
    preferences: Preferences,
    campaigns: BTreeMap<CampaignId, bool>,
    audit: Vec<AuditRecord>,
}

impl Account {
    /// A new account: webhook off, no URL, no campaign switched on.
    pub(crate) fn new(id: impl Into<AccountId>) -> Self {
        Account {
            id: id.into(),
            preferences: Preferences::default(),
            campaigns: BTreeMap::new(),
            audit: Vec::new(),
        }
    }

    /// The account's id.
    pub fn id(&self) -> &AccountId {
        &self.id
    }

    /// The account's preferences (the password is never shown).
    pub fn preferences(&self) -> &Preferences {
        &self.preferences
    }

    /// [`update_preferences_at`](Self::update_preferences_at) now, for the unit tests.
    #[cfg(test)]
    pub(crate) fn update_preferences(
        &mut self,
        who: &Principal,
        update: PreferencesUpdate,
    ) -> Result<AuditRecord> {
        self.update_preferences_at(who, update, Timestamp::now())
    }

    /// Applies `update` if `who` is a full administrator and every value is valid; records who
    /// changed which fields, and when. On any error nothing changes. Not saved: the engine
    /// saves the account this returns on.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] for anyone but a full administrator; the first invalid value
    /// as [`Error::InvalidConfig`] or [`Error::InvalidUrl`].
    pub(crate) fn update_preferences_at(
        &mut self,
        who: &Principal,
        update: PreferencesUpdate,
        at: Timestamp,
    ) -> Result<AuditRecord> {
        who.require_admin("change webhook preferences")?;
        let (next, changed) = self.preferences.with_update(update)?;
        self.preferences = next;
        let fields = changed.into_iter().map(str::to_owned).collect();
        Ok(self.record(who, at, fields))
    }

    /// [`set_campaign_webhook_at`](Self::set_campaign_webhook_at) now, for the unit tests.
    #[cfg(test)]
    pub(crate) fn set_campaign_webhook(
        &mut self,
        who: &Principal,
        campaign: impl Into<CampaignId>,
        enabled: bool,
    ) -> Result<AuditRecord> {
        self.set_campaign_webhook_at(who, campaign.into(), enabled, Timestamp::now())
    }

    /// Switches "Enable WebHook" on or off for one campaign (full administrators only). Not
    /// saved, as [`update_preferences_at`](Self::update_preferences_at).
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] for anyone but a full administrator.
    pub(crate) fn set_campaign_webhook_at(
        &mut self,
        who: &Principal,
        campaign: CampaignId,
        enabled: bool,
        at: Timestamp,
    ) -> Result<AuditRecord> {
        who.require_admin("change a campaign's webhook switch")?;
        let field = format!("campaign:{campaign}");
        self.campaigns.insert(campaign, enabled);
        Ok(self.record(who, at, vec![field]))
    }

    /// Replaces the preferences and every campaign switch with the given ones (full
    /// administrators only), audited by the names of the fields and campaigns that changed.
    /// On error nothing changes.
    pub(crate) fn replace_settings_at(
        &mut self,
        who: &Principal,
        preferences: Preferences,
        campaigns: BTreeMap<CampaignId, bool>,
        at: Timestamp,
    ) -> Result<AuditRecord> {
        who.require_admin("replace webhook settings")?;
        let mut fields: Vec<String> = self
            .preferences
            .changed_fields(&preferences)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut switched: Vec<&CampaignId> = self
            .campaigns
            .keys()
            .chain(campaigns.keys())
            .filter(|c| self.campaigns.get(*c) != campaigns.get(*c))
            .collect();
        switched.sort();
        switched.dedup();
        fields.extend(switched.into_iter().map(|c| format!("campaign:{c}")));
        self.preferences = preferences;
        self.campaigns = campaigns;
        Ok(self.record(who, at, fields))
    }

    /// Whether `other` holds the same settings (preferences and campaign switches; the audit
    /// log aside): saving it again would change nothing.
    pub(crate) fn same_settings(&self, other: &Account) -> bool {
        self.campaigns == other.campaigns
            && serde_json::to_value(self.preferences.to_stored()).ok()
                == serde_json::to_value(other.preferences.to_stored()).ok()
    }

    /// Whether the campaign's switch is on: its own, if it was ever set, or else the
    /// account's [`new_campaigns_enabled`](Preferences::new_campaigns_enabled) (off by
    /// default).
    pub fn campaign_webhook_enabled(&self, campaign: &CampaignId) -> bool {
        self.campaigns
            .get(campaign)
            .copied()
            .unwrap_or(self.preferences.new_campaigns_enabled())
    }

    /// The campaigns whose switch has been set, with its state.
    pub fn campaigns(&self) -> impl Iterator<Item = (&CampaignId, bool)> {
        self.campaigns.iter().map(|(id, on)| (id, *on))
    }

    /// Whether a call result of `campaign` is to be sent now: account enabled, URL set, campaign
    /// switched on.
    pub fn decide(&self, campaign: &CampaignId) -> SendDecision {
        decide(
            self.preferences.enabled(),
            self.preferences.is_configured(),
            self.campaign_webhook_enabled(campaign),
        )
    }

    /// The most recent changes, oldest first.
    pub fn audit_log(&self) -> &[AuditRecord] {
        &self.audit
    }

    fn record(&mut self, who: &Principal, at: Timestamp, fields: Vec<String>) -> AuditRecord {
        let record = AuditRecord {
            principal: who.name().to_owned(),
            at,
            fields,
        };
        // An update that changed nothing (the same values set again) is not a change to audit.
        if record.fields.is_empty() {
            return record;
        }
        if self.audit.len() == AUDIT_LOG_CAPACITY {
            self.audit.remove(0);
        }
        self.audit.push(record.clone());
        record
    }

    /// Serializes the account for storage, **password included**. This is the one way a
    /// password leaves the crate: the engine hands it to the store
    /// ([`Settings::save_account`](crate::store::Settings::save_account)), which keeps it as
    /// given. The form is the crate's own, not public API.
    pub(crate) fn to_storage_json(&self) -> String {
        let stored = StoredAccount {
            id: self.id.clone(),
            preferences: self.preferences.to_stored(),
            campaigns: self.campaigns.clone(),
            audit: self.audit.clone(),
        };
        serde_json::to_string(&stored).expect("account always serializes")
    }

    /// Reads an account back from [`Account::to_storage_json`], checking every value again.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the JSON is not a stored account, or a stored value no longer
    /// passes its checks.
    pub(crate) fn from_storage_json(json: &str) -> Result<Account> {
        let stored: StoredAccount = serde_json::from_str(json)
            .map_err(|e| Error::store("stored account is not valid", e))?;
        Ok(Account {
            preferences: Preferences::from_stored(&stored.preferences)?,
            id: stored.id,
            campaigns: stored.campaigns,
            audit: stored.audit,
        })
    }
}

/// The ids are read back as stored, unchecked: each passed the check when it was stored, and
/// one stored before ids were checked still loads (refusing it would lose the whole account).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    #[serde(deserialize_with = "stored_account_id")]
    id: AccountId,
    preferences: StoredPreferences,
    #[serde(deserialize_with = "stored_campaigns")]
    campaigns: BTreeMap<CampaignId, bool>,
    audit: Vec<AuditRecord>,
}

fn stored_account_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AccountId, D::Error> {
    <String as serde::Deserialize>::deserialize(d).map(AccountId::new)
}

fn stored_campaigns<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<CampaignId, bool>, D::Error> {
    let stored = <BTreeMap<String, bool> as serde::Deserialize>::deserialize(d)?;
    Ok(stored
        .into_iter()
        .map(|(campaign, on)| (CampaignId::new(campaign), on))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::OffReason;

    fn configured() -> (Account, Principal) {
        let admin = Principal::administrator("alice");
        let mut a = Account::new("acme");
        a.update_preferences(
            &admin,
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://crm.example/hook")
                .credentials("dialer", "pa55-w0rd!"),
        )
        .unwrap();
        (a, admin)
    }

    #[test]
    fn non_administrator_is_denied_and_nothing_changes() {
        let (mut a, _) = configured();
        let before = format!("{:?}", a.preferences());
        let audit_len = a.audit_log().len();
        let bob = Principal::user("bob");
        let err = a
            .update_preferences(
                &bob,
                PreferencesUpdate::new()
                    .enabled(false)
                    .url("https://evil.example/")
                    .credentials("x", "y"),
            )
            .unwrap_err();
        assert!(matches!(err, Error::PermissionDenied { ref principal, .. } if principal == "bob"));
        assert!(matches!(
            a.set_campaign_webhook(&bob, "c1", true),
            Err(Error::PermissionDenied { .. })
        ));
        assert_eq!(format!("{:?}", a.preferences()), before);
        assert!(!a.campaign_webhook_enabled(&"c1".into()));
        assert_eq!(a.audit_log().len(), audit_len);
    }

    #[test]
    fn audit_records_who_when_which_and_never_the_password() {
        let (mut a, admin) = configured();
        let at = Timestamp::from_second(1_700_000_000).unwrap();
        let rec = a
            .update_preferences_at(
                &admin,
                PreferencesUpdate::new().credentials("dialer", "n3w-Secret"),
                at,
            )
            .unwrap();
        assert_eq!(rec.principal, "alice");
        assert_eq!(rec.at, at);
        assert_eq!(rec.fields, ["password"]);
        let everything = format!("{:?} {:?}", a, a.audit_log());
        assert!(!everything.contains("n3w-Secret") && !everything.contains("pa55-w0rd!"));
    }

    #[test]
    fn both_switches_decide() {
        let (mut a, admin) = configured();
        let c: CampaignId = "winter".into();
        assert_eq!(
            a.decide(&c),
            SendDecision::Skip(OffReason::CampaignDisabled)
        );
        a.set_campaign_webhook(&admin, c.clone(), true).unwrap();
        assert_eq!(a.decide(&c), SendDecision::Send);
        a.update_preferences(&admin, PreferencesUpdate::new().enabled(false))
            .unwrap();
        assert_eq!(a.decide(&c), SendDecision::Skip(OffReason::AccountDisabled));
        a.update_preferences(&admin, PreferencesUpdate::new().enabled(true).clear_url())
            .unwrap();
        assert_eq!(
            a.decide(&c),
            SendDecision::Skip(OffReason::AccountNotConfigured)
        );
    }

    #[test]
    fn storage_round_trip_keeps_settings_and_is_the_only_place_the_password_appears() {
        let (mut a, admin) = configured();
        a.set_campaign_webhook(&admin, "winter", true).unwrap();
        let json = a.to_storage_json();
        assert!(json.contains("pa55-w0rd!"));
        let back = Account::from_storage_json(&json).unwrap();
        assert_eq!(format!("{a:?}"), format!("{back:?}"));
        assert_eq!(
            back.preferences().authorization(),
            a.preferences().authorization()
        );
        assert!(back.campaign_webhook_enabled(&"winter".into()));
    }

    #[test]
    fn setting_the_same_values_again_is_not_audited() {
        let (mut a, admin) = configured();
        let before = a.audit_log().len();
        let rec = a
            .update_preferences(
                &admin,
                PreferencesUpdate::new()
                    .enabled(true)
                    .url("https://crm.example/hook")
                    .credentials("dialer", "pa55-w0rd!"),
            )
            .unwrap();
        assert!(rec.fields.is_empty());
        assert_eq!(a.audit_log().len(), before);
    }

    #[test]
    fn a_campaign_never_switched_follows_the_accounts_new_campaign_setting() {
        let (mut a, admin) = configured();
        a.set_campaign_webhook(&admin, "off", false).unwrap();
        let (fresh, off): (CampaignId, CampaignId) = ("fresh".into(), "off".into());
        assert!(!a.preferences().new_campaigns_enabled(), "off by default");
        assert_eq!(
            a.decide(&fresh),
            SendDecision::Skip(OffReason::CampaignDisabled)
        );
        let rec = a
            .update_preferences(&admin, PreferencesUpdate::new().new_campaigns_enabled(true))
            .unwrap();
        assert_eq!(rec.fields, ["new_campaigns_enabled"]);
        assert_eq!(a.decide(&fresh), SendDecision::Send);
        assert_eq!(
            a.decide(&off),
            SendDecision::Skip(OffReason::CampaignDisabled)
        );
        let back = Account::from_storage_json(&a.to_storage_json()).unwrap();
        assert_eq!(back.decide(&fresh), SendDecision::Send);
    }

    #[test]
    fn audit_log_is_bounded() {
        let (mut a, admin) = configured();
        for i in 0..(AUDIT_LOG_CAPACITY + 10) {
            a.set_campaign_webhook(&admin, format!("c{i}"), true)
                .unwrap();
        }
        assert_eq!(a.audit_log().len(), AUDIT_LOG_CAPACITY);
        assert_eq!(
            a.audit_log().last().unwrap().fields,
            [format!("campaign:c{}", AUDIT_LOG_CAPACITY + 9)]
        );
    }
}
