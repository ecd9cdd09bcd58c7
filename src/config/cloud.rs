//! National-cloud presets: which hosts and OAuth resources a tenant in each cloud uses.
//!
//! Source: o365-facts.md section 1.2. Tokens from one cloud are not valid in another, and a
//! tenant asked on the wrong authority answers AADSTS90002/90038, so the cloud is an explicit
//! configuration item rather than something guessed from a domain name. Everything here can be
//! overridden per endpoint, server or credential (DoD and China resource strings are uncertain in
//! public sources).

/// The hosts and resources of one Microsoft 365 cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cloud {
    /// `worldwide`, `gcc-high`, `dod` or `china`.
    pub name: &'static str,
    /// Entra ID authority host, e.g. `login.microsoftonline.com`.
    pub authority_host: &'static str,
    /// IMAP and POP3 host (implicit TLS on 993 and 995).
    pub imap_host: &'static str,
    /// SMTP submission host (587, STARTTLS).
    pub smtp_host: &'static str,
    /// Resource prefix of delegated Exchange scopes, e.g. `https://outlook.office.com`.
    pub delegated_resource: &'static str,
    /// Scope of app-only (client-credentials) Exchange tokens.
    pub app_scope: &'static str,
    /// Microsoft Graph host.
    pub graph_host: &'static str,
}

pub const WORLDWIDE: Cloud = Cloud {
    name: "worldwide",
    authority_host: "login.microsoftonline.com",
    imap_host: "outlook.office365.com",
    smtp_host: "smtp.office365.com",
    delegated_resource: "https://outlook.office.com",
    app_scope: "https://outlook.office365.com/.default",
    graph_host: "graph.microsoft.com",
};

pub const GCC_HIGH: Cloud = Cloud {
    name: "gcc-high",
    authority_host: "login.microsoftonline.us",
    imap_host: "outlook.office365.us",
    smtp_host: "smtp.office365.us",
    delegated_resource: "https://outlook.office365.us",
    app_scope: "https://outlook.office365.us/.default",
    graph_host: "graph.microsoft.us",
};

pub const DOD: Cloud = Cloud {
    name: "dod",
    authority_host: "login.microsoftonline.us",
    imap_host: "outlook-dod.office365.us",
    smtp_host: "outlook-dod.office365.us",
    delegated_resource: "https://outlook-dod.office365.us",
    app_scope: "https://outlook-dod.office365.us/.default",
    graph_host: "dod-graph.microsoft.us",
};

pub const CHINA: Cloud = Cloud {
    name: "china",
    authority_host: "login.partner.microsoftonline.cn",
    imap_host: "partner.outlook.cn",
    smtp_host: "smtp.partner.outlook.cn",
    delegated_resource: "https://partner.outlook.cn",
    app_scope: "https://partner.outlook.cn/.default",
    graph_host: "microsoftgraph.chinacloudapi.cn",
};

pub const ALL: [&Cloud; 4] = [&WORLDWIDE, &GCC_HIGH, &DOD, &CHINA];

pub fn by_name(name: &str) -> Option<&'static Cloud> {
    ALL.into_iter().find(|c| c.name == name)
}

impl Cloud {
    /// The delegated scope that lets a user's token open `protocol` on Exchange.
    pub fn delegated_scope(&self, protocol: crate::probe::Protocol) -> String {
        let perm = match protocol {
            crate::probe::Protocol::Imap => "IMAP.AccessAsUser.All",
            crate::probe::Protocol::Pop3 => "POP.AccessAsUser.All",
            crate::probe::Protocol::Smtp => "SMTP.Send",
        };
        format!("{}/{}", self.delegated_resource, perm)
    }
}
