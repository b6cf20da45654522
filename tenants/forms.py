from django import forms
from django.contrib.auth import get_user_model

from tenants.choices import Role
from tenants.quotas import RESOURCES


class TenantForm(forms.Form):
    name = forms.CharField(max_length=100)


class QuotaForm(forms.Form):
    """One limit per resource; empty is unlimited."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for resource in RESOURCES:
            label = f"{resource.label} ({resource.unit})" if resource.unit else resource.label
            self.fields[resource.key] = forms.IntegerField(min_value=0, max_value=2**31 - 1, required=False,
                                                           label=label)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150, label="User name")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def clean_username(self):
        user = get_user_model().objects.filter(username=self.cleaned_data["username"], is_active=True).first()
        if user is None:
            raise forms.ValidationError("No active user with this name.")
        return user


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label="All tenants (platform-wide)")
    expires_in_days = forms.IntegerField(min_value=1, max_value=3650, required=False, initial=90,
                                         label="Expires in (days)", help_text="Leave empty for a token that "
                                         "does not expire.")

    def __init__(self, *args, tenants, platform_wide: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        self.fields["tenant"].required = not platform_wide
        if not platform_wide:
            self.fields["tenant"].empty_label = None
