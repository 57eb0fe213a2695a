"""Who signs in: directory accounts (OpenID Connect, LDAP / Active Directory), their groups, MFA."""
