//! The entries Epistle creates: the base of a new directory (configure,
//! comm_dssetup -b), domains, users, groups and administrators (commadmin).
//! One place builds them, so both backends get the same shapes.

use crate::dn::{Dn, escape_value};
use crate::entry::Entry;
use crate::lookup::{Schema, dc_dn};

/// Where things go in the tree.
#[derive(Debug, Clone)]
pub struct Layout {
    pub schema: Schema,
    /// The user/group suffix (`o=usergroup`).
    pub suffix: String,
    /// The DC tree root (schema 1 and 1.5).
    pub dcroot: String,
}

/// The group whose members may administer the whole directory.
pub const SERVICE_ADMINS: &str = "Service Administrators";

impl Layout {
    /// The organization of a domain: `o=<domain>,<suffix>`.
    pub fn org_dn(&self, domain: &str) -> String {
        format!("o={},{}", escape_value(domain), self.suffix)
    }

    pub fn people(org_dn: &str) -> String {
        format!("ou=People,{org_dn}")
    }

    pub fn groups(org_dn: &str) -> String {
        format!("ou=Groups,{org_dn}")
    }

    pub fn admins_group(&self) -> String {
        format!("cn={SERVICE_ADMINS},ou=Groups,{}", self.suffix)
    }

    /// The suffix entry itself.
    pub fn suffix_entry(&self) -> Entry {
        top_entry(&self.suffix)
    }

    /// The organization, People and Groups of a hosted domain, and for
    /// schema 1 / 1.5 its node in the DC tree (with the nodes above it).
    pub fn domain_entries(&self, domain: &str, org_dn: &str) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut org = if same_dn(org_dn, &self.suffix) {
            self.suffix_entry()
        } else {
            top_entry(org_dn)
        };
        for c in ["sunManagedOrganization", "inetDomain", "mailDomain"] {
            org.add("objectClass", c);
        }
        org.add("sunPreferredDomain", domain);
        org.add("associatedDomain", domain);
        org.add("inetDomainStatus", "active");
        org.add("mailDomainStatus", "active");
        out.push(org);
        for ou in ["People", "Groups"] {
            let mut e = Entry::new(format!("ou={ou},{org_dn}"));
            e.add("objectClass", "top");
            e.add("objectClass", "organizationalUnit");
            e.add("ou", ou);
            out.push(e);
        }
        if self.schema != Schema::Two {
            out.extend(self.dc_entries(domain, org_dn));
        }
        out
    }

    /// `dc=com,<root>`, then `dc=example,dc=com,<root>` pointing at the org.
    fn dc_entries(&self, domain: &str, org_dn: &str) -> Vec<Entry> {
        let labels: Vec<&str> = domain.split('.').collect();
        let mut out = Vec::new();
        for i in (0..labels.len()).rev() {
            let name = labels[i..].join(".");
            let mut e = Entry::new(dc_dn(&name, &self.dcroot));
            e.add("objectClass", "top");
            e.add("objectClass", "domain");
            e.add("dc", labels[i]);
            if i == 0 {
                e.add("objectClass", "inetDomain");
                e.add("objectClass", "mailDomain");
                e.add("inetDomainBaseDN", org_dn);
                e.add("inetDomainStatus", "active");
                e.add("mailDomainStatus", "active");
            }
            out.push(e);
        }
        out
    }

    /// A new directory: suffix, DC root (schema 1, 1.5), the default
    /// domain, the service administrators group and its first member.
    pub fn base_entries(&self, domain: &str, org_dn: &str, admin: &NewUser) -> Vec<Entry> {
        let mut out = Vec::new();
        if !same_dn(org_dn, &self.suffix) {
            out.push(self.suffix_entry());
        }
        if self.schema != Schema::Two {
            out.push(top_entry(&self.dcroot));
        }
        out.extend(self.domain_entries(domain, org_dn));
        if !same_dn(org_dn, &self.suffix) {
            let mut groups = Entry::new(format!("ou=Groups,{}", self.suffix));
            groups.add("objectClass", "top");
            groups.add("objectClass", "organizationalUnit");
            groups.add("ou", "Groups");
            out.push(groups);
        }
        let admin_entry = admin.entry(org_dn, domain);
        let mut admins = Entry::new(self.admins_group());
        admins.add("objectClass", "top");
        admins.add("objectClass", "groupOfUniqueNames");
        admins.add("cn", SERVICE_ADMINS);
        admins.add("uniqueMember", admin_entry.dn.clone());
        out.push(admin_entry);
        out.push(admins);
        out
    }
}

fn same_dn(a: &str, b: &str) -> bool {
    matches!((Dn::parse(a), Dn::parse(b)), (Ok(x), Ok(y)) if x == y)
}

/// An entry for a suffix or organization from its first RDN.
fn top_entry(dn: &str) -> Entry {
    let mut e = Entry::new(dn);
    e.add("objectClass", "top");
    let first = dn.split(',').next().unwrap_or("");
    let (attr, value) = first.split_once('=').unwrap_or(("o", first));
    match attr.trim().to_ascii_lowercase().as_str() {
        "dc" => {
            e.add("objectClass", "domain");
            e.add("dc", value.trim());
        }
        "ou" => {
            e.add("objectClass", "organizationalUnit");
            e.add("ou", value.trim());
        }
        _ => {
            e.add("objectClass", "organization");
            e.add("o", value.trim());
        }
    }
    e
}

/// What commadmin (or configure) knows about a new user.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub uid: String,
    pub given_name: String,
    pub surname: String,
    /// Already hashed (`{ARGON2}...`).
    pub password_hash: String,
    /// Defaults to `uid@domain`.
    pub mail: Option<String>,
    pub mail_host: Option<String>,
}

impl NewUser {
    pub fn entry(&self, org_dn: &str, domain: &str) -> Entry {
        let mut e = Entry::new(format!(
            "uid={},{}",
            escape_value(&self.uid),
            Layout::people(org_dn)
        ));
        for c in [
            "top",
            "person",
            "organizationalPerson",
            "inetOrgPerson",
            "inetUser",
            "inetMailUser",
            "inetLocalMailRecipient",
        ] {
            e.add("objectClass", c);
        }
        e.add("uid", self.uid.clone());
        let sn = if self.surname.is_empty() {
            self.uid.clone()
        } else {
            self.surname.clone()
        };
        let cn = format!("{} {sn}", self.given_name).trim().to_string();
        e.add("cn", cn);
        e.add("sn", sn);
        if !self.given_name.is_empty() {
            e.add("givenName", self.given_name.clone());
        }
        e.add(
            "mail",
            self.mail
                .clone()
                .unwrap_or_else(|| format!("{}@{domain}", self.uid)),
        );
        if let Some(h) = &self.mail_host {
            e.add("mailHost", h.clone());
        }
        e.add("mailDeliveryOption", "mailbox");
        e.add("mailUserStatus", "active");
        e.add("inetUserStatus", "active");
        if !self.password_hash.is_empty() {
            e.add("userPassword", self.password_hash.clone());
        }
        e
    }
}

/// A new mailing list. Its structural class is groupOfURLs rather than
/// groupOfUniqueNames, which (RFC 4519) must have a member from the start;
/// inetMailGroup still allows uniqueMember and memberURL both.
pub fn group_entry(name: &str, org_dn: &str, mail: &str) -> Entry {
    let mut e = Entry::new(format!(
        "cn={},{}",
        escape_value(name),
        Layout::groups(org_dn)
    ));
    for c in [
        "top",
        "groupOfURLs",
        "inetMailGroup",
        "inetLocalMailRecipient",
    ] {
        e.add("objectClass", c);
    }
    e.add("cn", name);
    e.add("mail", mail);
    e.add("inetMailGroupStatus", "active");
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_of_a_schema_2_directory() {
        let l = Layout {
            schema: Schema::Two,
            suffix: "o=usergroup".into(),
            dcroot: "o=usergroup".into(),
        };
        let admin = NewUser {
            uid: "admin".into(),
            password_hash: "{ARGON2}x".into(),
            ..Default::default()
        };
        let es = l.base_entries("example.com", "o=example.com,o=usergroup", &admin);
        let dns: Vec<_> = es.iter().map(|e| e.dn.as_str()).collect();
        assert_eq!(dns[0], "o=usergroup");
        assert!(dns.contains(&"uid=admin,ou=People,o=example.com,o=usergroup"));
        assert!(dns.contains(&"cn=Service Administrators,ou=Groups,o=usergroup"));
    }

    #[test]
    fn schema_1_adds_the_dc_tree() {
        let l = Layout {
            schema: Schema::One,
            suffix: "o=usergroup".into(),
            dcroot: "o=internet".into(),
        };
        let es = l.domain_entries("mail.example.com", "o=mail.example.com,o=usergroup");
        let node = es
            .iter()
            .find(|e| e.dn == "dc=mail,dc=example,dc=com,o=internet")
            .unwrap();
        assert_eq!(
            node.get("inetDomainBaseDN"),
            Some("o=mail.example.com,o=usergroup")
        );
        assert!(es.iter().any(|e| e.dn == "dc=com,o=internet"));
    }

    #[test]
    fn org_equal_to_suffix_merges() {
        let l = Layout {
            schema: Schema::Two,
            suffix: "o=usergroup".into(),
            dcroot: "o=usergroup".into(),
        };
        let admin = NewUser {
            uid: "admin".into(),
            ..Default::default()
        };
        let es = l.base_entries("example.com", "o=usergroup", &admin);
        let top: Vec<_> = es.iter().filter(|e| e.dn == "o=usergroup").collect();
        assert_eq!(top.len(), 1);
        assert!(top[0].has_class("sunManagedOrganization"));
    }
}
