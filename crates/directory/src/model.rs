//! What the directory says about domains, users and groups, in the terms
//! of the Sun ONE schema (original.md §7), read from entries.

use crate::entry::Entry;

/// `mailUserStatus`, `inetUserStatus`, `mailDomainStatus`,
/// `inetDomainStatus`, `inetMailGroupStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    /// A transient failure: mail is deferred, logins refused.
    Inactive,
    /// Mail goes to the hold queue; logins refused.
    Hold,
    /// Permanent failure; access blocked; purgeable.
    Deleted,
    /// The MTA will not deliver (store.overquotastatus); logins allowed.
    Overquota,
    /// Purged: as deleted.
    Removed,
    /// Groups only: permanent failure, "group disabled".
    Disabled,
}

impl Status {
    /// Missing means active; a value nobody knows is treated as inactive,
    /// which fails safe and temporarily.
    pub fn parse(v: Option<&str>) -> Status {
        match v.map(|s| s.trim().to_ascii_lowercase()) {
            None => Status::Active,
            Some(s) => match s.as_str() {
                "" | "active" => Status::Active,
                "inactive" => Status::Inactive,
                "hold" => Status::Hold,
                "deleted" => Status::Deleted,
                "overquota" => Status::Overquota,
                "removed" => Status::Removed,
                "disabled" => Status::Disabled,
                _ => Status::Inactive,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Hold => "hold",
            Status::Deleted => "deleted",
            Status::Overquota => "overquota",
            Status::Removed => "removed",
            Status::Disabled => "disabled",
        }
    }

    /// The most restrictive of two statuses (user and domain, say).
    pub fn worst(self, other: Status) -> Status {
        fn rank(s: Status) -> u8 {
            match s {
                Status::Active => 0,
                Status::Overquota => 1,
                Status::Hold => 2,
                Status::Inactive => 3,
                Status::Disabled => 4,
                Status::Deleted => 5,
                Status::Removed => 6,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// May the user log in (IMAP, POP, webmail)?
    pub fn login_allowed(self) -> bool {
        matches!(self, Status::Active | Status::Overquota)
    }

    /// What SMTP says to mail for this recipient.
    pub fn delivery(self) -> Delivery {
        match self {
            Status::Active => Delivery::Accept,
            Status::Hold => Delivery::Hold,
            Status::Inactive | Status::Overquota => Delivery::TryLater,
            Status::Deleted | Status::Removed | Status::Disabled => Delivery::Reject,
        }
    }
}

/// The MTA's treatment of mail for a recipient, by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Accept,
    /// Accepted into the hold queue.
    Hold,
    /// 4xx: try again later.
    TryLater,
    /// 5xx: permanent failure.
    Reject,
}

/// A quota: `-1` unlimited, `0` nothing allowed, else the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Max(u64),
}

impl Limit {
    /// Reads `mailQuota` (K, M, G suffixes) or `mailMsgQuota`; absent or
    /// `-2` (deprecated "system default") take `default`.
    pub fn parse(v: Option<&str>, default: &str) -> Limit {
        let v = v
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "-2")
            .unwrap_or(default)
            .trim();
        if v.starts_with('-') {
            return Limit::Unlimited;
        }
        match epistle_config::params::parse_size(v) {
            Some(n) => Limit::Max(n),
            None => Limit::Unlimited,
        }
    }
}

/// `mailDeliveryOption` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOption {
    Mailbox,
    Native,
    Unix,
    Autoreply,
    Program,
    Forward,
    Hold,
    Members,
    MembersOffline,
    File,
    Other(String),
}

impl DeliveryOption {
    pub fn parse(v: &str) -> DeliveryOption {
        match v.trim().to_ascii_lowercase().as_str() {
            "mailbox" => DeliveryOption::Mailbox,
            "native" => DeliveryOption::Native,
            "unix" => DeliveryOption::Unix,
            "autoreply" => DeliveryOption::Autoreply,
            "program" => DeliveryOption::Program,
            "forward" => DeliveryOption::Forward,
            "hold" => DeliveryOption::Hold,
            "members" => DeliveryOption::Members,
            "members_offline" => DeliveryOption::MembersOffline,
            "file" => DeliveryOption::File,
            other => DeliveryOption::Other(other.to_string()),
        }
    }
}

/// A hosted domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The name asked for.
    pub name: String,
    /// The canonical name, when `name` is an alias.
    pub canonical: String,
    /// Where its users and groups live.
    pub base_dn: String,
    pub status: Status,
    /// `inetDomainSearchFilter`: the login filter (`%U`, `%V`, `%o`).
    pub search_filter: Option<String>,
    pub entry: Entry,
}

/// Vacation / autoreply settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AutoReply {
    pub mode: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    /// Hours between two replies to one sender.
    pub timeout_hours: Option<u32>,
    pub start: Option<String>,
    pub end: Option<String>,
}

/// A mail user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub dn: String,
    pub uid: String,
    /// The canonical domain the user belongs to.
    pub domain: String,
    pub mail: Option<String>,
    pub alternates: Vec<String>,
    pub equivalents: Vec<String>,
    pub mail_host: Option<String>,
    pub delivery: Vec<DeliveryOption>,
    pub forwarding: Vec<String>,
    /// The user's own status combined with the domain's.
    pub status: Status,
    pub disk_quota: Limit,
    pub message_quota: Limit,
    pub sieve: Option<String>,
    pub autoreply: AutoReply,
    pub entry: Entry,
}

impl std::fmt::Debug for User {
    // userPassword stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("dn", &self.dn)
            .field("uid", &self.uid)
            .field("mail", &self.mail)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Builds a user from its entry; `domain` is the domain it was found
    /// under, whose status also applies.
    pub fn from_entry(entry: Entry, domain: &Domain, quota_defaults: (&str, &str)) -> User {
        let get = |a: &str| entry.get(a).map(str::to_string);
        let all = |a: &str| entry.get_all(a).to_vec();
        let own = Status::parse(entry.get("mailUserStatus"))
            .worst(Status::parse(entry.get("inetUserStatus")));
        let mut delivery: Vec<DeliveryOption> = entry
            .get_all("mailDeliveryOption")
            .iter()
            .map(|v| DeliveryOption::parse(v))
            .collect();
        if delivery.is_empty() {
            delivery.push(DeliveryOption::Mailbox);
        }
        User {
            dn: entry.dn.clone(),
            uid: get("uid").unwrap_or_default(),
            domain: domain.canonical.clone(),
            mail: get("mail"),
            alternates: all("mailAlternateAddress"),
            equivalents: all("mailEquivalentAddress"),
            mail_host: get("mailHost"),
            delivery,
            forwarding: all("mailForwardingAddress"),
            status: own.worst(domain.status),
            disk_quota: Limit::parse(entry.get("mailQuota"), quota_defaults.0),
            message_quota: Limit::parse(entry.get("mailMsgQuota"), quota_defaults.1),
            sieve: get("mailSieveRuleSource"),
            autoreply: AutoReply {
                mode: get("mailAutoReplyMode"),
                subject: get("mailAutoReplySubject"),
                text: get("mailAutoReplyText"),
                timeout_hours: entry
                    .get("mailAutoReplyTimeOut")
                    .and_then(|v| v.trim().parse().ok()),
                start: get("vacationStartDate"),
                end: get("vacationEndDate"),
            },
            entry,
        }
    }

    /// Every address that reaches this user.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.mail
            .iter()
            .chain(&self.alternates)
            .chain(&self.equivalents)
            .map(String::as_str)
    }

    pub fn passwords(&self) -> &[String] {
        self.entry.get_all("userPassword")
    }
}

/// A mailing list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub dn: String,
    pub mail: Option<String>,
    pub status: Status,
    /// `mgrpRFC822MailMember`: member addresses.
    pub rfc822_members: Vec<String>,
    /// `uniqueMember`: member DNs (users or groups).
    pub unique_members: Vec<String>,
    /// `memberURL`: LDAP URLs of dynamic members.
    pub member_urls: Vec<String>,
    /// `mgrpAllowedBroadcaster`: `mailto:` or `ldap:///` URLs; empty = anyone.
    pub allowed_broadcasters: Vec<String>,
    pub deliver_to: Vec<String>,
    pub errors_to: Option<String>,
    pub moderators: Vec<String>,
    pub entry: Entry,
}

impl Group {
    pub fn from_entry(entry: Entry, domain: &Domain) -> Group {
        let all = |a: &str| entry.get_all(a).to_vec();
        Group {
            dn: entry.dn.clone(),
            mail: entry.get("mail").map(str::to_string),
            status: Status::parse(entry.get("inetMailGroupStatus")).worst(domain.status),
            rfc822_members: all("mgrpRFC822MailMember"),
            unique_members: all("uniqueMember"),
            member_urls: all("memberURL"),
            allowed_broadcasters: all("mgrpAllowedBroadcaster"),
            deliver_to: all("mgrpDeliverTo"),
            errors_to: entry.get("mgrpErrorsTo").map(str::to_string),
            moderators: all("mgrpModerator"),
            entry,
        }
    }
}

/// What an address leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    User(Box<User>),
    Group(Box<Group>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_meanings() {
        assert_eq!(Limit::parse(Some("-1"), "0"), Limit::Unlimited);
        assert_eq!(Limit::parse(Some("0"), "-1"), Limit::Max(0));
        assert_eq!(Limit::parse(Some("10M"), "-1"), Limit::Max(10 << 20));
        assert_eq!(Limit::parse(None, "1G"), Limit::Max(1 << 30));
        assert_eq!(Limit::parse(Some("-2"), "5K"), Limit::Max(5 << 10));
        assert_eq!(Limit::parse(None, "-1"), Limit::Unlimited);
    }

    #[test]
    fn status_rules() {
        assert_eq!(Status::parse(None), Status::Active);
        assert_eq!(Status::parse(Some("nonsense")), Status::Inactive);
        assert_eq!(Status::Active.worst(Status::Hold), Status::Hold);
        assert_eq!(Status::Deleted.worst(Status::Inactive), Status::Deleted);
        assert!(!Status::Hold.login_allowed());
        assert!(Status::Overquota.login_allowed());
        assert_eq!(Status::Inactive.delivery(), Delivery::TryLater);
        assert_eq!(Status::Deleted.delivery(), Delivery::Reject);
    }
}
